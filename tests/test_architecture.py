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
