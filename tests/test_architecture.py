"""The packages form layers that import only downward (README, "Architecture").

    evaluation            closed-loop rollouts, metrics, probe, action following, benchmarks
    distill   agents      training stages | policies and their training (neither imports the other)
    causvid_env           worlds, real simulators, scripted policies, env, engine, checkpoints, viewer
    models                networks and maths

Every import is checked, including the ones inside functions: a lazy import that reaches upward
would only hide a piece that lives on the wrong floor. examples/ and tests/ may import anything.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the project packages it may import (itself included)
ALLOWED = {
    "models": {"models"},
    "causvid_env": {"models", "causvid_env"},
    "distill": {"models", "causvid_env", "distill"},
    "agents": {"models", "causvid_env", "agents"},
    "evaluation": {"models", "causvid_env", "distill", "agents", "evaluation"},
}


def imported_packages(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, top-level package) for every import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # `from . import x` / `from ..y import z` stay inside the package tree
                found.append((node.lineno, package))
            elif node.module:
                found.append((node.lineno, node.module.split(".")[0]))
    return found


def layer_violations(root: Path = ROOT) -> list[str]:
    bad = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, target in imported_packages(path, package):
                if target in ALLOWED and target not in allowed:
                    bad.append(f"{path.relative_to(root)}:{line} imports {target}")
    return bad


def test_every_layer_exists():
    for package in ALLOWED:
        assert (ROOT / package / "__init__.py").is_file(), package


def test_packages_import_only_downward():
    bad = layer_violations()
    assert not bad, "imports that reach up a layer (or across distill/agents):\n" + "\n".join(bad)


def test_the_check_sees_imports_inside_functions(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "bad.py").write_text("def f():\n    from causvid_env import env\n")
    (tmp_path / "distill").mkdir()
    (tmp_path / "distill" / "bad.py").write_text("import agents.ppo as p\nfrom . import fine\n")
    for package in ALLOWED:
        (tmp_path / package).mkdir(exist_ok=True)
    assert layer_violations(tmp_path) == ["models/bad.py:2 imports causvid_env", "distill/bad.py:1 imports agents"]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_installed_packages_include_every_layer(package):
    text = (ROOT / "pyproject.toml").read_text()
    assert f'"{package}*"' in text, f"add {package}* to [tool.setuptools.packages.find] include"
