"""Module boundaries that the design states: only the `harness.tracking` package imports MLflow, only `harness.tune`
imports Ray, and the packages import each other without cycles between modules."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = [path for folder in ("harness", "models", "datasets") for path in sorted((REPO / folder).rglob("*.py"))]


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at any depth of the file (lazy imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def importers_of(module: str) -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in SOURCES if module in imported_modules(p))


def test_the_scan_sees_the_package():
    # A scan that found no file (or no import) would pass the tests below on an empty tree.
    assert len(SOURCES) > 50
    assert "torch" in imported_modules(REPO / "harness" / "inference.py")


def test_only_tracking_imports_mlflow():
    importers = importers_of("mlflow")
    assert importers and all(path.startswith("harness/tracking/") for path in importers), importers


def test_only_the_tune_package_imports_ray():
    assert importers_of("ray")
    assert all(path.startswith("harness/tune/") for path in importers_of("ray")), importers_of("ray")


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino", "tensorrt", "onnx"])
def test_only_the_engines_package_imports_an_inference_engine(engine):
    importers = importers_of(engine)
    assert all(path.startswith("harness/engines/") for path in importers), importers
    assert engine == "onnx" or "harness/engines/__init__.py" not in importers  # imported by name, on demand


@pytest.mark.parametrize("probe", ["import mlflow", "from mlflow.entities import Metric", "import ray.train"])
def test_the_scan_catches_a_lazy_import(tmp_path, probe):
    module = tmp_path / "m.py"
    module.write_text(f"def f():\n    {probe}\n")
    assert imported_modules(module) & {"mlflow", "ray"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] != "harness":
        parts.insert(0, "harness")  # models/ and datasets/ are harness.models and harness.datasets
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def internal_imports(path: Path, known: set[str]) -> set[str]:
    """The harness modules ``path`` imports (lazy imports included), resolved to module names."""
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(c for c in candidates if c in known and c != own)
    return found


def test_no_import_cycle_between_modules():
    """Lazy imports included: a cycle hidden inside a function is still two modules that cannot be read apart.
    Package ``__init__`` files that re-export their modules are left out (importing a submodule runs them)."""
    modules = {module_name(p): p for p in SOURCES}
    graph = {
        name: internal_imports(path, set(modules)) - {n for n in modules if modules[n].name == "__init__.py"}
        for name, path in modules.items()
        if path.name != "__init__.py"
    }
    assert "harness.sweep.comparison" in graph["harness.sweep.report"]
    cycles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles
