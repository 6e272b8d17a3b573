"""Imports only go downward through the layers of docs/ARCHITECTURE.md, the CLI included.

Every import statement counts, also the lazy ones inside functions: a lazy import is a
dependency too. A module belongs to the layer of its longest matching prefix below.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mucode_env", "agents", "baselines", "mucode_cli")

# (module prefix, layer); the longest matching prefix wins.
LAYERS: dict[str, str] = {
    "mucode_env.problem": "records", "mucode_env.errors": "records", "mucode_env.atomic": "records",
    "mucode_env.sandbox.limits": "records", "mucode_env.sandbox.results": "records",
    "mucode_env.sandbox": "sandbox",
    "mucode_env.datasets": "datasets",
    "mucode_env": "env",
    "agents": "agents",
    "agents.mucode": "mucode",
    "baselines": "baselines",
    "mucode_cli": "cli",
}
# what each layer may import besides itself (sandbox and datasets are independent leaves)
ALLOWED: dict[str, set[str]] = {
    "records": set(),
    "sandbox": {"records"},
    "datasets": {"records"},
    "env": {"records", "sandbox", "datasets"},
    "agents": {"records", "sandbox", "datasets", "env"},
    "mucode": {"records", "sandbox", "datasets", "env", "agents"},
    "baselines": {"records", "sandbox", "datasets", "env", "agents", "mucode"},
    "cli": {"records", "sandbox", "datasets", "env", "agents", "mucode", "baselines"},
}


def layer_of(module: str) -> str | None:
    matches = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of everything ``path`` imports (relative imports resolved)."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def test_every_module_has_a_layer():
    unplaced = [module_name(p) for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")
                if layer_of(module_name(p)) is None]
    assert not unplaced


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_only_go_downward(package):
    offenders = []
    for path in sorted((REPO / package).rglob("*.py")):
        mine = layer_of(module_name(path))
        for name in sorted(imported_modules(path)):
            theirs = layer_of(name)
            if theirs is not None and theirs != mine and theirs not in ALLOWED[mine]:
                offenders.append(f"{path.relative_to(REPO)} ({mine}) imports {name} ({theirs})")
    assert not offenders, "\n".join(offenders)


def test_the_architecture_document_names_every_layer():
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    for layer in ALLOWED:
        assert re.search(rf"\b{layer}\b", text, re.IGNORECASE), layer


def test_importing_the_packages_stays_light():
    code = ("import sys, mucode_env, agents, baselines, mucode_cli, agents.mucode, agents.models\n"
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'llama_cpp', 'datasets', 'ray', 'fastapi')\n"
            "         if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == ""


def test_agents_public_names_resolve():
    import agents
    import agents.mucode

    for module in (agents, agents.mucode):
        for name in module.__all__:
            assert getattr(module, name) is not None
