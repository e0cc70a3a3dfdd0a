"""The engine sits below everything that uses it: graph mode included, `trainctl/autograd/`
imports nothing from the layers above (design.md's layers), only duck-types on them."""

import ast
from pathlib import Path

import trainctl.autograd

ABOVE = ("nn", "optim", "data", "config", "train", "bench", "cli", "predict", "serve")


def test_the_engine_imports_nothing_from_the_layers_above_it():
    found = []
    for path in sorted(Path(trainctl.autograd.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                if parts[0] == "trainctl" and len(parts) > 1 and parts[1] in ABOVE:
                    found.append(f"{path.name}: {name}")
    assert found == []
