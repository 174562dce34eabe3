"""The package's layout holds what docs/architecture.rst says of it.

Walks the source of ``sklearn_caf`` and the backends (their ``import`` statements, module
level and inside functions) and checks: no import circles; a concept (a subpackage, or a
top-level module) is entered only through its package or a public module, and never for a
name starting with ``_``; scikit-learn's private API and the optional dependencies are
imported in one place each; the backends use only public names and the documented internal
ones; and every name of docs/api.rst imports from its documented module and is in that
module's ``__all__``.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sklearn_caf"
BACKENDS = {
    "sklearn_caf_torch": ROOT / "backends" / "torch" / "sklearn_caf_torch",
    "sklearn_caf_tensorflow": ROOT / "backends" / "tensorflow" / "sklearn_caf_tensorflow",
}
OPTIONAL = {"pandas", "pyarrow", "PIL", "matplotlib", "skimage", "numba", "distributed"}

#: What the backends take from the core that is not in a public ``__all__``: (module, name).
#: docs/architecture.rst lists each with the reason.
BACKEND_INTERNALS = {
    ("sklearn_caf._explainers", "EPS"),
    ("sklearn_caf._explainers", "check_layer_params"),
    ("sklearn_caf._explainers", "representative_vectors"),
    ("sklearn_caf._utils", "caller_stacklevel"),
    ("sklearn_caf._demo_options", "BOX_THRESHOLD"),
    ("sklearn_caf._demo_options", "DEMO_HINT"),
    ("sklearn_caf._demo_options", "RESULT_COLUMNS"),
    ("sklearn_caf._demo_options", "DemoError"),
    ("sklearn_caf._demo_options", "owned_file"),
}


def module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, child.end_lineno + 1))
    return lines


def imports(path: Path, root: Path, package: str):
    """``(line, target module, imported names)`` of every import statement of a file, with
    relative imports resolved; ``from pkg import sub`` names the submodule where it is one."""
    name = module_name(path, root, package)
    here = name if is_package(path) else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = type_checking_lines(tree)
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            yield node.lineno, target, [alias.name for alias in node.names]


def source_files(root: Path):
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def core_modules() -> dict[str, Path]:
    return {module_name(p, PACKAGE, "sklearn_caf"): p for p in source_files(PACKAGE)}


MODULES = core_modules()


def resolve(target: str, names: list[str]) -> list[str]:
    """The core modules an import loads (beyond its parents)."""
    found = []
    for name in names or [None]:
        sub = f"{target}.{name}" if name else None
        if sub in MODULES:
            found.append(sub)
        elif target in MODULES:
            found.append(target)
    return found


def concept(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for _, target, names in imports(path, PACKAGE, "sklearn_caf"):
            if target and target.split(".")[0] == "sklearn_caf":
                graph[module].update(m for m in resolve(target, names) if m != module)
    return graph


def test_the_layout_has_the_documented_subpackages():
    packages = {m for m, p in MODULES.items() if is_package(p)}
    assert {
        "sklearn_caf._utils",
        "sklearn_caf._explainers",
        "sklearn_caf._explainers.l2caf",
        "sklearn_caf.evaluation",
        "sklearn_caf.metrics",
        "sklearn_caf.datasets",
        "sklearn_caf.plotting",
        "sklearn_caf.cli",
    } <= packages


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle a depth-first walk of ``graph`` meets, as the modules along it."""
    state: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return circles


def test_no_import_circles():
    circles = find_circles(import_graph())
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_the_circle_check_finds_circles():
    assert find_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_circles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_graph_sees_function_level_imports():
    # evaluate_localization's optional joblib aside, the runner reaches the metrics; and the
    # lazily imported CLI module is an edge of the CLI's parser.
    graph = import_graph()
    assert "sklearn_caf.cli._evaluate" in graph["sklearn_caf.cli._main"]
    assert "sklearn_caf.metrics" in graph["sklearn_caf.evaluation._chunks"]


def cross_concept_violations(module: str, path: Path) -> list[str]:
    own = concept(module)
    out = []
    for line, target, names in imports(path, PACKAGE, "sklearn_caf"):
        if not target or target.split(".")[0] != "sklearn_caf" or concept(target) == own:
            continue
        if module in ("sklearn_caf", "sklearn_caf.__main__"):
            continue  # the public face re-exports
        where = f"{path.relative_to(ROOT)}:{line}"
        inner = target.split(".")[2:]  # below the concept's package
        if any(part.startswith("_") for part in inner):
            out.append(f"{where}: imports from {target}, inside another concept")
        for name in names:
            dunder = name.startswith("__") and name.endswith("__")
            if name.startswith("_") and not dunder and f"{target}.{name}" not in MODULES:
                out.append(f"{where}: imports private {name} from {target}")
            elif f"{target}.{name}" in MODULES and name.startswith("_"):
                out.append(f"{where}: imports private module {target}.{name}")
    return out


def test_concepts_meet_only_through_public_names():
    problems = []
    for module, path in MODULES.items():
        problems += cross_concept_violations(module, path)
    assert not problems, "\n".join(problems)


def test_scikit_learn_private_api_is_imported_in_one_module():
    allowed = PACKAGE / "_utils" / "_sklearn.py"
    problems = []
    for path in source_files(PACKAGE):
        for line, target, names in imports(path, PACKAGE, "sklearn_caf"):
            if not target or target.split(".")[0] != "sklearn":
                continue
            private = any(p.startswith("_") for p in target.split(".")) or any(
                n.startswith("_") for n in names
            )
            if private and path != allowed:
                problems.append(f"{path.relative_to(ROOT)}:{line}: {target} {names}")
    assert not problems, "\n".join(problems)


def test_optional_dependencies_go_through_the_one_importer():
    # The kernel module itself needs numba; it is imported only after import_optional checks.
    allowed = {PACKAGE / "metrics" / "_components.py"}
    problems = []
    for path in source_files(PACKAGE):
        for line, target, _ in imports(path, PACKAGE, "sklearn_caf"):
            if target and target.split(".")[0] in OPTIONAL and path not in allowed:
                problems.append(f"{path.relative_to(ROOT)}:{line}: import {target}")
    assert not problems, "\n".join(problems)


def test_backends_use_public_names_and_documented_internals():
    architecture = (ROOT / "docs" / "architecture.rst").read_text(encoding="utf-8")
    problems = []
    for package, root in BACKENDS.items():
        for path in source_files(root):
            for line, target, names in imports(path, root, package):
                if not target or target.split(".")[0] != "sklearn_caf":
                    continue
                public = set(getattr(importlib.import_module(target), "__all__", ()))
                for name in names:
                    if name in public or (target, name) in BACKEND_INTERNALS:
                        continue
                    problems.append(f"{path.relative_to(ROOT)}:{line}: {target}.{name}")
    assert not problems, "undocumented internals used by the backends:\n" + "\n".join(problems)
    for target, name in sorted(BACKEND_INTERNALS):
        assert f"``{target}.{name}``" in architecture or (
            f"``{target}``" in architecture and f"``{name}``" in architecture
        ), f"docs/architecture.rst does not list {target}.{name}"


def api_entries() -> list[tuple[str, str]]:
    """``(module, name)`` of every autosummary entry of docs/api.rst."""
    entries, module, in_summary = [], None, False
    for raw in (ROOT / "docs" / "api.rst").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if match := re.match(r"\.\. currentmodule:: (\S+)", line):
            module, in_summary = match.group(1), False
        elif line.startswith(".. autosummary::"):
            in_summary = True
        elif in_summary and line and not line.startswith(":") and raw.startswith("   "):
            entries.append((module, line))
        elif in_summary and line and not raw.startswith(" "):
            in_summary = False
    return entries


@pytest.mark.parametrize(("module", "name"), api_entries(), ids="{0[0]}.{0[1]}".format)
def test_every_documented_name_imports_from_its_module_and_is_in_its_all(module, name):
    if module.startswith(("sklearn_caf_torch", "sklearn_caf_tensorflow")):
        pytest.importorskip("torch" if "torch" in module else "tensorflow")
    imported = importlib.import_module(module)
    assert hasattr(imported, name), f"{module} has no {name}"
    assert name in getattr(imported, "__all__", ()), f"{name} is not in {module}.__all__"


def test_the_api_page_has_entries():
    # The parser of docs/api.rst is not vacuous: it finds every section's names.
    entries = api_entries()
    assert ("sklearn_caf", "L2CAFExplainer") in entries
    assert ("sklearn_caf.plotting", "plot_deletion_insertion") in entries
    assert ("sklearn_caf.evaluation", "model_fingerprint") in entries
    assert len(entries) > 50


def test_every_public_all_is_documented():
    # The other direction: a name a public module exports is on the API page.
    documented = set(api_entries())
    public = [
        "sklearn_caf",
        "sklearn_caf.boxes",
        "sklearn_caf.metrics",
        "sklearn_caf.evaluation",
        "sklearn_caf.sanity",
        "sklearn_caf.backend",
        "sklearn_caf.testing",
        "sklearn_caf.plotting",
        "sklearn_caf.datasets",
    ]
    missing = []
    for module in public:
        for name in importlib.import_module(module).__all__:
            if name.startswith("__"):
                continue
            if (module, name) not in documented and not any(
                n == name
                and getattr(importlib.import_module(m), n, None)
                is getattr(importlib.import_module(module), name)
                for m, n in documented
            ):
                missing.append(f"{module}.{name}")
    assert not missing, f"in __all__ but not in docs/api.rst: {missing}"


def test_the_architecture_page_lists_every_module():
    page = (ROOT / "docs" / "architecture.rst").read_text(encoding="utf-8")
    missing = [
        str(path.relative_to(ROOT))
        for path in source_files(PACKAGE)
        if path.name != "__init__.py" and f" {path.name} " not in page
    ]
    assert not missing, f"docs/architecture.rst's tree lacks {missing}"
