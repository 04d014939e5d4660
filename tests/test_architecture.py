"""Import contracts: the relay cannot hold what it cannot see; hazmat lives in one module per package.

What is checked, on every ``.py`` file under ``relay/``, ``clients/`` and ``sims/`` (imports
anywhere in a module, including inside functions):

* ``relay`` never imports ``clients``;
* ``cryptography`` is imported in ``relay`` only by ``relay/_primitives.py``, in ``clients``
  only by ``clients/_primitives.py``, and in ``sims`` not at all;
* ``nacl`` (PyNaCl, libsodium: XEdDSA signing; Ed25519 verification and X25519 public keys, with
  OpenSSL's answers) is imported only by ``clients/_xeddsa.py`` and the two ``_primitives.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The one module of each package allowed to import ``cryptography`` (None: no module may).
FENCED: dict[str, str | None] = {
    "relay": "relay/_primitives.py",
    "clients": "clients/_primitives.py",
    "sims": None,
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)  # from relaysim import clients
    # Installed, the folders are one package (relaysim.relay, relaysim.clients, relaysim.sims).
    return names | {n.removeprefix("relaysim.") for n in names if n.startswith("relaysim.")}


def _imports_package(names: set[str], package: str) -> bool:
    return any(n == package or n.startswith(package + ".") for n in names)


# The modules of each package allowed to import PyNaCl (none: no module may).
NACL_FENCED: dict[str, frozenset[str]] = {
    "relay": frozenset({"relay/_primitives.py"}),
    "clients": frozenset({"clients/_xeddsa.py", "clients/_primitives.py"}),
    "sims": frozenset(),
}


def nacl_offenders(root: Path, package: str) -> list[str]:
    """Modules of ``package`` under ``root`` that import ``nacl`` but are not its fenced module."""
    return sorted(
        str(p.relative_to(root))
        for p in (root / package).rglob("*.py")
        if str(p.relative_to(root)) not in NACL_FENCED[package] and _imports_package(_imports(p), "nacl")
    )


def cryptography_offenders(root: Path, package: str) -> list[str]:
    """Modules of ``package`` under ``root`` that import ``cryptography`` but are not its fenced module."""
    return sorted(
        str(p.relative_to(root))
        for p in (root / package).rglob("*.py")
        if str(p.relative_to(root)) != FENCED[package] and _imports_package(_imports(p), "cryptography")
    )


def relay_modules_importing_clients(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in (root / "relay").rglob("*.py")
        if _imports_package(_imports(p), "clients")
    )


def test_relay_never_imports_clients() -> None:
    assert relay_modules_importing_clients(ROOT) == []


@pytest.mark.parametrize("package", sorted(FENCED))
def test_cryptography_is_imported_only_by_the_fenced_module(package: str) -> None:
    assert cryptography_offenders(ROOT, package) == []


@pytest.mark.parametrize("package", sorted(NACL_FENCED))
def test_nacl_is_imported_only_by_the_fenced_module(package: str) -> None:
    assert nacl_offenders(ROOT, package) == []


def test_the_nacl_fence_finds_offenders(tmp_path: Path) -> None:
    for package in NACL_FENCED:
        (tmp_path / package).mkdir()
        (tmp_path / package / "_xeddsa.py").write_text("from nacl.bindings import crypto_core_ed25519_add\n")
        (tmp_path / package / "late.py").write_text("def f():\n    import nacl.signing\n")
    assert nacl_offenders(tmp_path, "clients") == ["clients/late.py"]
    assert nacl_offenders(tmp_path, "relay") == ["relay/_xeddsa.py", "relay/late.py"]
    assert _imports_package(_imports(ROOT / "clients/_xeddsa.py"), "nacl")


@pytest.mark.parametrize("package", sorted(p for p, fenced in FENCED.items() if fenced))
def test_the_fenced_module_exists_and_imports_cryptography(package: str) -> None:
    fenced = ROOT / str(FENCED[package])
    assert _imports_package(_imports(fenced), "cryptography")


def test_the_contract_checker_sees_imports(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import clients.session\nfrom cryptography.hazmat.primitives import hashes\n"
        "from relaysim import clients\nfrom relaysim.clients.agent import DeviceAgent\n"
    )
    names = _imports(bad)
    assert {"clients.session", "cryptography.hazmat.primitives", "clients", "clients.agent"} <= names
    assert _imports_package(names, "clients")


def test_the_contract_checker_finds_offenders(tmp_path: Path) -> None:
    for package in FENCED:
        (tmp_path / package).mkdir()
        (tmp_path / package / "_primitives.py").write_text("from cryptography.exceptions import InvalidTag\n")
        (tmp_path / package / "ok.py").write_text("import cryptographyish\nimport msgpack\n")
        (tmp_path / package / "late.py").write_text("def f():\n    import cryptography.x509\n")
    (tmp_path / "relay" / "leak.py").write_text("from clients import spec\n")
    assert cryptography_offenders(tmp_path, "relay") == ["relay/late.py"]
    assert cryptography_offenders(tmp_path, "clients") == ["clients/late.py"]
    assert cryptography_offenders(tmp_path, "sims") == ["sims/_primitives.py", "sims/late.py"]
    assert relay_modules_importing_clients(tmp_path) == ["relay/leak.py"]


# --- one protocol truth: constants defined once ---------------------------------------------


def _module_constants(path: Path) -> list[tuple[str, object]]:
    """(name, value) of each module-level ``NAME = <literal>`` (annotated or not)."""
    out: list[tuple[str, object]] = []
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if isinstance(value, ast.Constant):
            out.extend((t.id, value.value) for t in targets if isinstance(t, ast.Name))
    return out


def _sources() -> list[Path]:
    return sorted(p for package in FENCED for p in (ROOT / package).rglob("*.py"))


def test_key_type_tags_are_defined_once() -> None:
    # Encode(PK)'s one-byte key types (0x05 for X25519, 0x0A for ML-KEM-1024): relay/wire.py is the
    # one place both sides can import (relay never imports clients).
    definitions = [
        (str(p.relative_to(ROOT)), name)
        for p in _sources()
        for name, value in _module_constants(p)
        if "TYPE" in name.upper() and isinstance(value, bytes) and len(value) == 1
    ]
    assert definitions == [("relay/wire.py", "EC_KEY_TYPE"), ("relay/wire.py", "KEM_KEY_TYPE")]


def test_the_ratchet_header_layout_is_defined_once() -> None:
    # The header's struct format (DHs public ‖ PN ‖ N) appears only in clients/ratchet.py; others
    # ask clients.ratchet for it.
    layout = ">32sII"
    users = sorted(
        str(p.relative_to(ROOT))
        for p in _sources()
        if any(
            isinstance(node, ast.Constant) and node.value == layout
            for node in ast.walk(ast.parse(p.read_text(), str(p)))
        )
    )
    assert users == ["clients/ratchet.py"]
