"""pytest configuration for the doctests of the documentation pages (``docs/*.rst``).

``pytest --doctest-glob="*.rst" docs`` runs every ``>>>`` snippet of every page, each page
in one namespace from top to bottom, as a reader would run them. Generated pages (the
gallery's, the API stubs) are not collected: the gallery scripts run in the docs build,
the docstrings with ``--doctest-modules``.
"""

from __future__ import annotations

import pytest

collect_ignore_glob = ["_build/*", "auto_examples/*", "api/*", "examples/*", "conf.py"]


@pytest.fixture(autouse=True)
def _quiet_fast_and_in_a_scratch_folder(tmp_path, monkeypatch):
    # Snippets that write files (an evaluation run's folder, a dataset on disk) write them
    # in a folder of their own, never in the checkout.
    monkeypatch.chdir(tmp_path)
    try:
        import matplotlib
    except ImportError:
        pass
    else:
        matplotlib.use("Agg")
    try:
        import torch
    except ImportError:
        yield
        return
    # The models are tiny: more threads only contend with the other test processes.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
