"""Imports only go downward: mucode_env <- agents <- baselines (the CLI loads the upper layers lazily)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {"mucode_env": ("agents", "baselines"), "agents": ("baselines",)}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_do_not_import_upper_layers(package):
    offenders = []
    for path in sorted((REPO / package).rglob("*.py")):
        if path.name == "cli.py" and package == "mucode_env":
            continue  # the CLI imports agents/baselines by module name, lazily, on purpose
        bad = imported_packages(path) & set(FORBIDDEN[package])
        if bad:
            offenders.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def test_importing_the_packages_stays_light():
    code = ("import sys, mucode_env, agents, baselines, mucode_env.cli\n"
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'llama_cpp', 'datasets', 'ray') if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == ""


def test_agents_public_names_resolve():
    import agents

    for name in agents.__all__:
        assert getattr(agents, name) is not None
