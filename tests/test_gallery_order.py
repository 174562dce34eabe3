"""The gallery's reading order names the examples that exist, and every one of them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_order_lists_every_example_by_its_file_name():
    spec = importlib.util.spec_from_file_location("gallery_order", DOCS / "gallery_order.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    examples = sorted(p.name for p in (DOCS / "examples").glob("plot_*.py"))
    assert sorted(module.ORDER) == examples
