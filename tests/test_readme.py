"""Every Python snippet of the README runs as written.

The snippets are a narrative: the first builds ``net`` and ``images``, the later ones use
them, as a reader pasting them in order into one session would. They run, in order, in one
fresh interpreter (the README turns metadata routing on and off, which is process-wide).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_snippets(text: str) -> list[str]:
    return [m.group(1) for m in _FENCE.finditer(text)]


def test_snippets_are_found():
    snippets = python_snippets(README.read_text(encoding="utf-8"))
    assert len(snippets) >= 5
    assert "make_pipeline" in snippets[0]
    assert python_snippets("x\n```python\na = 1\n```\n```bash\nls\n```\n") == ["a = 1\n"]


def test_readme_snippets_run(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn_caf_torch")
    pytest.importorskip("tensorflow")
    pytest.importorskip("sklearn_caf_tensorflow")
    snippets = python_snippets(README.read_text(encoding="utf-8"))
    # A marker after each snippet tells which one failed, and that each one printed.
    marked = [
        f"{code}\nprint('--- snippet {i} done ---', flush=True)\n"
        for i, code in enumerate(snippets)
    ]
    script = tmp_path / "readme_snippets.py"
    script.write_text("\n".join(marked), encoding="utf-8")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}
    # The checkout's packages first, as the test session sees them.
    env["PYTHONPATH"] = os.pathsep.join([*sys.path, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    chunks = re.split(r"--- snippet \d+ done ---\n", proc.stdout)
    assert len(chunks) == len(snippets) + 1
    assert "x0" in chunks[0] and "(4, 32, 32)" in chunks[0]  # the first example prints
    assert all(chunk.strip() for chunk in chunks[:2])
