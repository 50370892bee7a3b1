"""Layering rules that a refactor could silently break."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cavachon_like"
#: Attributes of CAVACHON that are its implementation, not the public model interface.
PRIVATE_PARTS = {"graph", "components", "decoders", "likelihoods", "hierarchical_encoder", "modality_specs",
                 "component_specs"}
LAYERS = ["data", "distributions", "nn", "module", "model", "train", "plotting", "analysis", "config"]


def _sources(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((PACKAGE / folder).rglob("*.py"))]


def test_analyses_plots_and_cli_use_only_the_model_interface():
    offenders = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}: model.{node.attr}"
        for path in _sources("analysis", "plotting", "config") + [PACKAGE / "cli.py"]
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "model"
        and (node.attr in PRIVATE_PARTS or node.attr.startswith("_"))
    ]
    assert not offenders, "\n".join(offenders)


def test_imports_flow_one_way():
    """A package imports only from packages before it in the data flow (train may serve model)."""
    order = {name: i for i, name in enumerate(LAYERS)}
    allowed_back = {("model", "train")}
    offenders = []
    for path in _sources(*LAYERS):
        layer = path.relative_to(PACKAGE).parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                target = node.module.split(".")[0]
                if target in order and order[target] > order[layer] and (layer, target) not in allowed_back:
                    offenders.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert not offenders, "\n".join(offenders)


def test_no_private_modules_of_dependencies():
    """A dependency's private module can change in any release; importing one is a latent break."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else
                       [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.relative_to(PACKAGE)}: {m}" for m in modules
                          if any(part.startswith("_") and part != "__future__" for part in m.split("."))]
    assert not offenders, "\n".join(offenders)


def test_data_layer_has_no_import_circle():
    """No module of data/ imports, at run time, a module that imports it back."""
    graph: dict[str, set[str]] = {}
    for path in _sources("data"):
        imports = set()
        for node in ast.parse(path.read_text()).body:  # module level and functions alike, not TYPE_CHECKING
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.level == 1 and inner.module:
                    if not (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)):
                        imports.add(inner.module)
        graph[path.stem] = imports
    circles = [f"{a} <-> {b}" for a, targets in graph.items() for b in targets if a in graph.get(b, set())]
    assert not circles, circles


def test_import_has_no_global_side_effects():
    """Importing the package and its plotting module leaves matplotlib's backend alone."""
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import cavachon_like, cavachon_like.plotting, "
            "cavachon_like.analysis; print(matplotlib.get_backend())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": ""})
    assert result.stdout.strip().lower() == "svg"
