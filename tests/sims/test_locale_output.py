"""What relaysim prints under a locale that is not UTF-8: the same files, no crash, and JSON for a pipe
in UTF-8 (the bytes ``--json FILE`` writes), whatever the machine's encoding.

``PYTHONIOENCODING`` stands in for such a locale (``LANG=de_DE.ISO-8859-1``, or a redirect on
Windows in its ANSI code page): it sets stdout's encoding as the locale would, on any machine,
without needing the locale installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Telegram before September 2024 (a dated run): its policy's reason cites "telegram.org/privacy §8.3",
# so a disclosure's JSON holds a character beyond ASCII.
TELEGRAM_2021 = """
[scenario]
name = "tg"
duration = "1h"
seed = 7
start = 2021-01-01

[relay]
profile = "telegram-cloud"

[[people]]
name = "zoe"
devices = [{ region = "us", address = "192.0.2.1" }]

[[people]]
name = "jozef"
devices = [{ region = "us", address = "192.0.2.2" }]

[[conversations]]
between = ["zoe", "jozef"]
messages = [{ at = "10m", from = "zoe", text = "Cześć — już jesteś?" }]
"""


def _cli(*argv: str, cwd: Path, encoding: str | None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "PYTHONUTF8")}
    if encoding is not None:
        env["PYTHONIOENCODING"] = encoding
    return subprocess.run(
        [sys.executable, "-m", "relaysim.sims.cli", *argv], cwd=cwd, env=env, capture_output=True, timeout=120
    )


def test_a_run_on_a_latin1_terminal_finishes_and_writes_the_same_files(tmp_path: Path) -> None:
    (tmp_path / "tg.toml").write_text(TELEGRAM_2021, encoding="utf-8")
    utf8 = _cli("run", "tg.toml", "--out", "utf8", "--quiet", cwd=tmp_path, encoding="utf-8")
    latin1 = _cli("run", "tg.toml", "--out", "latin1", "--quiet", cwd=tmp_path, encoding="latin-1")
    assert utf8.returncode == 0, utf8.stderr.decode()
    # it used to end with "internal error: UnicodeEncodeError" (the em dash of "wrote …, summary.md — see it")
    assert latin1.returncode == 0, latin1.stderr.decode()
    assert b"internal error" not in latin1.stderr
    assert "see it with: relaysim show latin1" in latin1.stdout.decode("latin-1")
    names = sorted(
        str(p.relative_to(tmp_path / "utf8")) for p in (tmp_path / "utf8").rglob("*") if p.is_file()
    )
    assert "relay.db" in names
    for name in names:
        assert (tmp_path / "latin1" / name).read_bytes() == (tmp_path / "utf8" / name).read_bytes(), name


def test_disclose_json_to_stdout_is_utf8_whatever_the_locale(tmp_path: Path) -> None:
    (tmp_path / "tg.toml").write_text(TELEGRAM_2021, encoding="utf-8")
    assert _cli("run", "tg.toml", "--out", "run", "--quiet", cwd=tmp_path, encoding=None).returncode == 0
    argv = ("disclose", "--db", "run/relay.db", "--process", "subpoena", "--target", "zoe")
    wrote = _cli(*argv, "--json", "answer.json", cwd=tmp_path, encoding=None)
    assert wrote.returncode == 0, wrote.stderr.decode()
    file = (tmp_path / "answer.json").read_bytes()
    assert "§8.3".encode() in file  # the test means something only with a character beyond ASCII
    for encoding in ("utf-8", "latin-1", "ascii"):
        piped = _cli(*argv, "--json", "-", cwd=tmp_path, encoding=encoding)
        assert piped.returncode == 0, (encoding, piped.stderr.decode())
        assert piped.stdout == file, encoding
