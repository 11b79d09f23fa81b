"""Package boundaries: what crosses from one subpackage to another is public (in its ``__all__``)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pdenas"


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, names) of every import in ``path``."""
    package = list(path.relative_to(ROOT).parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            out.append((node.lineno, module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
    return out


def test_no_module_imports_another_subpackages_private_modules():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(ROOT).parts[:2]  # ("pdenas", "search") or ("pdenas", "cli.py")
        for line, module, names in _imports(path):
            parts = module.split(".")
            if parts[0] != "pdenas" or len(parts) < 2:
                continue
            if len(parts) == 2 and parts[1].startswith("_"):  # pdenas._util & co: shared by every layer
                continue
            if tuple(parts[:2]) == own:
                continue
            private_module = any(p.startswith("_") for p in parts[2:]) or any(
                n.startswith("_") and (PACKAGE / Path(*parts[1:]) / f"{n}.py").exists() for n in names  # from .x import _y
            )
            if private_module:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module} {names}")
                continue
            exported = getattr(importlib.import_module(module), "__all__", None)
            hidden = [n for n in names if exported is not None and n not in exported and n != "*"]
            if hidden:
                offenders.append(f"{path.relative_to(ROOT)}:{line} uses {module}.{hidden}, not in its __all__")
    assert offenders == []
