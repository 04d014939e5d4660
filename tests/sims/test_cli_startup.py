"""What every command pays before it starts: the CLI builds its parser (all subcommands, for
``--help`` too) without importing the analyses' heavy libraries. numpy and networkx cost ~0.2-0.3 s
to import; ``relaysim --help`` went from ~0.5 s to ~0.15 s when the parser stopped pulling them in
(sims.defences imported the analyses at module level). The commands that analyse import them when
they run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "networkx")

_MAIN = """
import contextlib, io, sys
from relaysim.sims.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    main(sys.argv[1:])
"""


def _heavy_imported(code: str, *argv: str) -> list[str]:
    """The heavy modules in sys.modules after ``code`` ran in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    res = subprocess.run(
        [sys.executable, "-c", probe, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 0, res.stderr
    return list(json.loads(res.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "argv",
    [
        ("--help",),
        ("relay", "serve", "--help"),
        ("defences", "--help"),
        ("reproduce", "--help"),
        ("run", "--help"),
        ("scenarios",),
    ],
)
def test_the_parser_and_light_commands_leave_numpy_and_networkx_alone(argv: tuple[str, ...]) -> None:
    assert _heavy_imported(_MAIN, *argv) == []


def test_the_probe_sees_them_where_they_are_imported() -> None:
    assert _heavy_imported("import relaysim.sims.analysis.run") == sorted(HEAVY)
