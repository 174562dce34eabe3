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


# -- installing -------------------------------------------------------------------------------
ROOT = README.parent


def _extras() -> dict[str, set[str]]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {
        extra: {re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].lower() for req in reqs}
        for extra, reqs in project["optional-dependencies"].items()
    }


def test_quickstart_installs_what_evaluate_needs():
    """The first command of the Quickstart, one line, root package first, brings the eval
    extra: every package ``sklearn-caf evaluate`` imports on its way."""
    text = README.read_text(encoding="utf-8")
    quickstart = text[text.index("## Quickstart") :]
    first = re.search(r"```bash\n(.*?)\n", quickstart).group(1)
    assert first.startswith("pip install ") and "&& sklearn-caf demo" in first
    match = re.search(r'-e "\.\[([a-z,]+)\]" -e \./backends/torch', first)
    assert match, first
    extras = match.group(1).split(",")
    assert {"demo", "eval"} <= set(extras)
    installed = set().union(*(_extras()[e] for e in extras))
    needed = {"pandas", "pyarrow", "matplotlib", "pillow", "numba", "scikit-image", "tqdm"}
    assert needed <= installed, needed - installed


def _optional_imports():
    """``(file, module, extra)`` of every ``import_optional`` call of the package."""
    import ast

    for path in sorted((ROOT / "sklearn_caf").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name != "import_optional" or not node.args:
                continue
            if not isinstance(node.args[0], ast.Constant):
                continue
            extra = next((k.value.value for k in node.keywords if k.arg == "extra"), "eval")
            yield path.name, node.args[0].value, extra


def test_install_hints_name_an_extra_that_brings_the_package():
    from sklearn_caf._utils._optional import _DISTRIBUTIONS

    extras = _extras()
    calls = list(_optional_imports())
    assert len(calls) >= 10
    for file, module, extra in calls:
        top = module.split(".")[0]
        dist = _DISTRIBUTIONS.get(top, top)
        assert extra in extras, (file, module, extra)
        assert dist in extras[extra], f"{file}: {module} hints the {extra!r} extra, without {dist}"


def test_install_hint_says_which_extra(monkeypatch):
    import sys

    from sklearn_caf._utils import import_optional

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError) as info:
        import_optional("pyarrow", needed_by="sklearn-caf evaluate")
    message = str(info.value)
    assert "'eval' extra" in message and 'pip install -e ".[eval]"' in message


def test_every_extra_is_described_in_the_install_page():
    text = (ROOT / "docs" / "install.rst").read_text(encoding="utf-8")
    described = set(re.findall(r"^``([a-z]+)``\n    ", text, flags=re.MULTILINE))
    assert described == set(_extras()), set(_extras()) ^ described
