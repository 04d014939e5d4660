"""The project stands alone: what its code, tests and docs cite is a file inside it (docs/, the README)
or a source named in full (a specification's address, a repository and its path) — never the notes the
project was built from, which a reader of this repository does not have."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT = (".py", ".md", ".toml", ".txt", ".cfg", ".html", ".css", ".js")


def _tracked() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout: the tracked files cannot be listed")
    return [ROOT / p for p in out.decode().split("\0") if p.endswith(TEXT) and (ROOT / p).is_file()]


# The notes beside the project (the reference folder it was built from) and their file names, cited
# bare as if a reader had them.
_OUTSIDE = re.compile(
    r"\.\./shared|shared/reference|(?<![\w/.-])(protocols|lawful-access)\.md\b|(?<![\w/.-])style\.md\b"
)
_DOCS = re.compile(r"(?<![\w.-])docs/([\w.-]+\.md)\b")


def test_nothing_cites_the_notes_beside_the_project() -> None:
    this = Path(__file__).resolve()
    found = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()[:120]}"
        for p in _tracked()
        if p != this
        for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if _OUTSIDE.search(line)
    ]
    assert not found, "cites what is not in the repository:\n" + "\n".join(found)


def test_every_docs_page_cited_is_in_the_repository() -> None:
    missing = sorted(
        {
            f"{p.relative_to(ROOT)}: docs/{name}"
            for p in _tracked()
            for name in _DOCS.findall(p.read_text(encoding="utf-8", errors="replace"))
            if not (ROOT / "docs" / name).is_file()
        }
    )
    assert not missing, "cites a docs page that does not exist:\n" + "\n".join(missing)
