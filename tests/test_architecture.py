"""Import contracts: the relay cannot hold what it cannot see; hazmat lives in one module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_relay_never_imports_clients() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "relay").rglob("*.py")
        if any(n == "clients" or n.startswith("clients.") for n in _imports(p))
    ]
    assert offenders == []


def test_cryptography_hazmat_is_imported_only_by_clients_primitives() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "clients").rglob("*.py")
        if p.name != "_primitives.py" and any(n.startswith("cryptography") for n in _imports(p))
    ]
    assert offenders == []


def test_the_contract_checker_sees_imports(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import clients.session\nfrom cryptography.hazmat.primitives import hashes\n")
    assert {"clients.session", "cryptography.hazmat.primitives"} <= _imports(bad)
