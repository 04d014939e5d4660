"""Lint, format and type checks are part of the suite, so the README's one test command runs them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


# ruff is run through this interpreter, not looked up on PATH: a virtual environment used without activating it
# (as .ci/run does) has ruff installed but not on PATH, and a lint check must not skip itself there.
HAS_RUFF = importlib.util.find_spec("ruff") is not None


@pytest.mark.skipif(not HAS_RUFF, reason="ruff is in the test extra")
def test_ruff_lint() -> None:
    res = _run(sys.executable, "-m", "ruff", "check", ".")
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.skipif(not HAS_RUFF, reason="ruff is in the test extra")
def test_ruff_format() -> None:
    res = _run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy() -> None:
    res = _run(sys.executable, "-m", "mypy")
    assert res.returncode == 0, res.stdout + res.stderr
