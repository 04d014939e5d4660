"""Every way a user can get a command wrong, or cut it short, ends in one clear line on stderr and a
non-zero exit status: never a traceback. And outputs a user can trust: an --out folder holding an
earlier run is refused unless --force, which removes only relaysim's own files there."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaysim.sims.cli import main

ROOT = Path(__file__).resolve().parents[2]


def cli(*argv: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relaysim.sims.cli", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def assert_clean_error(res: subprocess.CompletedProcess[str], *needles: str, status: int = 2) -> None:
    assert res.returncode == status, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    for needle in needles:
        assert needle in res.stderr, (needle, res.stderr)


@pytest.fixture(scope="module")
def tf_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tf"
    assert main(["run", "two-friends", "--out", str(out), "--quiet"]) == 0
    return out


# --- part 4: no traceback from any command ---------------------------------------------------------


def test_demo_with_a_scenario_name_that_does_not_exist(tmp_path: Path) -> None:
    res = cli("demo", "--scenario", "two-freinds", "--out", str(tmp_path / "o"))
    assert_clean_error(res, "two-freinds")
    assert res.stderr.count("\n") == 1


def test_demo_with_a_broken_scenario_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[scenario]\nname = "x"\nduration = "4h\n', encoding="utf-8")
    res = cli("demo", "--scenario", str(bad), "--out", str(tmp_path / "o"))
    assert_clean_error(res, "bad.toml")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
@pytest.mark.parametrize(
    "argv",
    [
        ["run", "PIPE", "--quiet"],
        ["sweep", "PIPE", "--seeds", "1", "--quiet"],
        ["demo", "--scenario", "PIPE"],
        ["defences", "PIPE"],
    ],
)
def test_a_named_pipe_nothing_writes_to_is_refused_not_waited_on(argv: list[str], tmp_path: Path) -> None:
    """``relaysim run fifo.toml`` with nothing writing to the pipe waited in open() for ever. (The
    timeout turns a hang into a failure; it is no limit on how long a refusal takes.)"""
    pipe = tmp_path / "fifo.toml"
    os.mkfifo(pipe)
    res = cli(*[str(pipe) if a == "PIPE" else a for a in argv], "--out", str(tmp_path / "o"), timeout=120)
    assert_clean_error(res, f"{pipe}: a pipe (FIFO) that nothing is writing to")
    assert res.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()


def _blocked_opening_a_pipe(pid: int) -> bool:
    """Whether process ``pid`` waits in open() for the other end of a named pipe (Linux)."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text(encoding="ascii").strip() == "wait_for_partner"
    except OSError:
        return False


@pytest.mark.skipif(
    not hasattr(os, "mkfifo") or not Path("/proc/self/wchan").exists(),
    reason="no named pipes, or no /proc to see a writer wait for its reader",
)
def test_a_named_pipe_whose_writer_started_first_is_read(tmp_path: Path) -> None:
    """``mkfifo s.toml; cat two-friends.toml > s.toml & relaysim run s.toml``: the writer waits in
    open() for its reader; relaysim, opening the pipe without waiting, must read what it writes
    (nothing yet, or some of it, when it first looks) to the end, not refuse it as writer-less."""
    from relaysim.sims.scenario import builtin_scenarios

    source = builtin_scenarios()["two-friends"]
    pipe = tmp_path / "fifo.toml"
    os.mkfifo(pipe)
    # once its reader comes, the writer waits a little before writing, as a program that has work to
    # do first would: the reader most likely finds the pipe empty, with a writer, when it first looks
    write = (
        "import sys, time\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "with open(sys.argv[2], 'wb') as f:\n"
        "    time.sleep(0.3)\n"
        "    f.write(data[:100]); f.flush(); time.sleep(0.1); f.write(data[100:])\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", write, str(source), str(pipe)])
    try:
        while not _blocked_opening_a_pipe(writer.pid):  # the writer first: waiting for a reader
            assert writer.poll() is None, "the writer ended before opening the pipe"
            time.sleep(0.01)
        out = tmp_path / "o"
        assert main(["run", str(pipe), "--out", str(out), "--quiet"]) == 0
        assert writer.wait(timeout=60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["scenario"] == "two-friends"


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
@pytest.mark.parametrize(
    "argv", [["run", "SOCK", "--quiet"], ["sweep", "SOCK", "--seeds", "1"], ["demo", "--scenario", "SOCK"]]
)
def test_a_socket_given_as_a_scenario_file_is_said_to_be_a_socket(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Unix socket where a scenario file belongs said "cannot read the file: No such device or
    address" (open()'s ENXIO)."""
    monkeypatch.chdir(tmp_path)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("s.toml")
        assert main([a if a != "SOCK" else "s.toml" for a in argv] + ["--out", "o"]) == 2
    err = capsys.readouterr().err
    assert "s.toml: a socket, not a scenario file" in err, err
    assert "No such device" not in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_out_pointing_at_a_file(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("mine\n", encoding="utf-8")
    for argv in (["demo", "--scenario", "two-friends"], ["run", "two-friends"]):
        res = cli(*argv, "--out", str(f))
        assert_clean_error(res, str(f), "not a folder")
    assert f.read_text(encoding="utf-8") == "mine\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--width", "0"],
        ["demo", "--wire", "--width", "-5"],
        ["show", "DIR", "--width", "0"],
        ["show", "DIR", "--limit", "0"],
        ["chart", "DIR", "--width", "0"],
    ],
)
def test_bad_numbers_are_refused_by_the_parser(argv: list[str], tf_run: Path) -> None:
    res = cli(*[str(tf_run) if a == "DIR" else a for a in argv])
    assert_clean_error(res, "expected")


@pytest.mark.parametrize("order", [["--all", "--limit", "5"], ["--limit", "24", "--all"]])
def test_show_all_with_a_limit_is_refused_naming_both(
    tf_run: Path, order: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``show --all --limit N`` showed every row, N ignored, saying nothing (--all won). It is a usage
    error naming both options, even with N the default (24)."""
    with pytest.raises(SystemExit) as exit_:
        main(["show", str(tf_run), *order])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "argument --" in captured.err and "not allowed with argument --" in captured.err, captured.err
    assert "--all" in captured.err.splitlines()[-1] and "--limit" in captured.err.splitlines()[-1]
    assert main(["show", str(tf_run), "--limit", "24"]) == 0  # (each alone, as before)
    assert main(["show", str(tf_run), "--all"]) == 0


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["run", "two-friends", "--seed", "-1"], "got -1"),
        (["run", "two-friends", "--seed", str(2**63)], f"got {2**63}"),
        (["run", "two-friends", "--seed", str(10**400)], "an integer of 401 digits"),  # (shown by its length)
        (["run", "two-friends", "--seed", "seven"], "got 'seven'"),
        (["demo", "--wire", "--seed", "-5"], "got -5"),
    ],
)
def test_a_seed_outside_0_to_2_63_is_refused_naming_the_option(
    argv: list[str], shown: str, tmp_path: Path
) -> None:
    """A negative --seed made [generate]'s social graph of its absolute value; a seed past 2**63 - 1
    can be written in no scenario file (sims.scenario.MAX_SEED). Both ran."""
    res = cli(*argv, "--out", str(tmp_path / "o"))
    assert_clean_error(res, "argument --seed: expected an integer from 0 to 9223372036854775807", shown)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["bench", "sim", "--seed", "-1"], "got -1"),
        (["bench", "analysis", "--seed", str(2**63)], f"got {2**63}"),
        (["bench", "relay", "--seed", "-2"], "got -2"),
        (["bench", "relay", "--attack", "--seed", "seven"], "got 'seven'"),
    ],
)
def test_a_bench_seed_outside_0_to_2_63_is_refused_naming_the_option(
    argv: list[str], shown: str, tmp_path: Path
) -> None:
    """The benchmarks' --seed was a plain int: -1 or 2**63 was measured with. (--json into a folder
    not there comes after it: a bench that took the seed stops there, naming --json, not running.)"""
    res = cli(*argv, "--json", str(tmp_path / "missing" / "x.json"), timeout=60)
    assert_clean_error(res, "argument --seed: expected an integer from 0 to 9223372036854775807", shown)


@pytest.mark.parametrize(
    "argv",
    [
        ["relaysim.sims.bench.relay", "--child", "echo", "--seed", "-1", "--connections", "x"],
        ["relaysim.sims.bench.attack", "--child", "--seed", "-1", "--good", "x", "--db", "x"],
    ],
)
def test_a_bench_server_process_refuses_a_seed_outside_0_to_2_63(argv: list[str]) -> None:
    """The relay processes bench relay (and its --attack) start take the seed as the bench does."""
    res = subprocess.run(
        [sys.executable, "-m", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert_clean_error(res, "argument --seed: expected an integer from 0 to 9223372036854775807", "got -1")


def test_a_sweep_whose_seeds_would_pass_the_largest_is_refused_before_it_runs(tmp_path: Path) -> None:
    scenario = tmp_path / "top.toml"
    text = (ROOT / "relaysim" / "sims" / "scenarios" / "two-friends.toml").read_text(encoding="utf-8")
    scenario.write_text(text.replace("seed = 2015", f"seed = {2**63 - 2}", 1), encoding="utf-8")
    res = cli("sweep", str(scenario), "--seeds", "3", "--out", str(tmp_path / "o"), "--quiet")
    assert_clean_error(res, f"--seeds 3: the seeds run from the scenario's, {2**63 - 2}, to {2**63}, past")
    assert not (tmp_path / "o").exists()


def test_the_largest_seed_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """2**63 - 1 is a seed like any other: the run, its files (the seed in summary.json and in the
    store's note that its keys are a simulation's) and a disclosure served on them afterwards."""
    import sqlite3

    out = tmp_path / "top"
    assert main(["run", "two-friends", "--seed", str(2**63 - 1), "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["seed"] == 2**63 - 1
    db = sqlite3.connect(out / "relay.db")
    try:
        (note,) = db.execute("SELECT value FROM meta WHERE key = 'simulation_keys'").fetchone()
    finally:
        db.close()
    assert note == f"scenario 'two-friends', seed {2**63 - 1}"
    capsys.readouterr()
    argv = [
        "disclose",
        "--db",
        str(out / "relay.db"),
        "--process",
        "subpoena",
        "--target",
        "amira",
        "--json",
        "-",
    ]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["target"] == "amira"


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "two-friends", "--out", ""],
        ["run", "two-friends", "--force", "--out", " "],
        ["demo", "--out", ""],
        ["chart", ""],
        ["sweep", "two-friends", "--seeds", "1", "--out", ""],
        ["defences", "two-friends", "--out", ""],
    ],
)
def test_an_empty_out_folder_is_refused_not_replaced_by_the_default(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--out "$DIR"`` with DIR unset: it ran into out/NAME (with --force, replacing the run there)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "expected a folder, got" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "argument"),
    [
        (["run", "", "--quiet"], "NAME_OR_PATH"),
        (["sweep", "", "--seeds", "1"], "NAME_OR_PATH"),
        (["defences", ""], "NAME_OR_PATH"),
        (["reproduce", ""], "NAME_OR_PATH"),
        (["demo", "--scenario", ""], "--scenario"),
        (["disclose", "--db", "", "--process", "subpoena"], "--db"),
        (["disclose", "--db", " ", "--process", "subpoena"], "--db"),
        (["relay", "serve", "--db", ""], "--db"),
        (["relay", "serve", "--admin", ""], "--admin"),
        (["relay", "serve", "--registration-token-file", ""], "--registration-token-file"),
        (["relay", "serve", "--tls-cert", "", "--tls-key", ""], "--tls-cert"),
    ],
)
def test_an_empty_path_is_refused_naming_the_argument(
    argv: list[str],
    argument: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``relaysim run "$F"`` with F unset said ".: cannot read the file: Is a directory", and
    ``disclose --db ""`` "--db .: a folder" (the empty path is the current folder); ``relay serve``
    took ``--admin ""``, ``--tls-cert ""`` or ``--registration-token-file ""`` as the option left out
    (no admin socket, plain TCP, open registration) and served."""
    monkeypatch.chdir(tmp_path)
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    given = argv[argv.index(argument) + 1] if argument.startswith("--") else ""
    assert f"argument {argument}: expected " in err, err
    assert f"got {given!r} (an empty shell variable?)" in err, err
    assert "Is a directory" not in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_every_argument_that_names_a_path_refuses_an_empty_one() -> None:
    """Every path argument of every subcommand goes through runfiles.not_empty (its argparse types),
    so that a new one cannot take "" as the current folder again."""
    import argparse

    from relaysim.relay.server import build_parser as relay_parser
    from relaysim.sims.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parsers = [*subparsers.choices.items(), ("relay serve", relay_parser())]
    checked = []
    for name, parser in parsers:
        for action in parser._actions:
            if action.dest == "metric":  # sweep --metric PATH: a dotted path into summary.json
                continue
            if action.metavar in ("FILE", "DIR", "PATH", "NAME_OR_PATH") or action.dest in ("db", "scenario"):
                assert action.type is not None, (name, action.dest)
                with pytest.raises(argparse.ArgumentTypeError, match="got ''"):
                    action.type("")  # type: ignore[operator]
                assert action.type("x") == "x"  # type: ignore[operator]
                checked.append((name, action.dest))
    for expected in [("run", "scenario"), ("disclose", "db"), ("show", "dir"), ("relay serve", "admin")]:
        assert expected in checked, checked


@pytest.mark.parametrize("name", ["", " ", "\t"])
def test_disclose_refuses_an_empty_order_name_not_falls_back_to_the_default(
    name: str, tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``disclose --name "$NAME"`` with NAME unset served the order as subpoena-amira without a word
    (an empty name read as the option left out), and ``--name " "`` named it " " in the disclosure."""
    out = tmp_path / "d.json"
    argv = ["disclose", "--db", str(tf_run / "relay.db"), "--process", "subpoena", "--target", "amira"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--name", name, "--json", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert (
        f"argument --name: expected the order's name, got {name!r} (an empty shell variable?); leave --name out for PROCESS-TARGET"
        in err
    ), err
    assert not out.exists()
    assert main([*argv, "--name", "order.v2", "--json", str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["name"] == "order.v2"


@pytest.mark.parametrize(
    ("argv", "argument"),
    [
        (["disclose", "--db", "DB", "--process", "subpoena", "--target", "\udcff"], "--target"),
        (
            ["disclose", "--db", "DB", "--process", "subpoena", "--name", "n\udcff", "--json", "o.json"],
            "--name",
        ),
        (["sweep", "two-friends", "--seeds", "1", "--metric", "a\udcff", "--out", "sw"], "--metric"),
        (
            ["sweep", "two-friends", "--seeds", "1", "--param", "network.loss=\udcff", "--out", "sw"],
            "--param",
        ),
    ],
)
def test_words_that_are_not_text_are_refused_naming_the_argument(
    argv: list[str],
    argument: str,
    tf_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A byte the locale cannot decode (``--name $'n\\xff'`` in a UTF-8 terminal) reaches Python as a
    lone surrogate, which no UTF-8 file or SQLite text holds: disclose --name with --json and sweep
    --metric were internal errors (UnicodeEncodeError) after the work, sweep's folder made; disclose
    --target was SQLite's "surrogates not allowed"."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main([str(tf_run / "relay.db") if a == "DB" else a for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {argument}: expected text, got b'" in err and "byte 0xff is not" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "NAME", "--quiet"],
        ["sweep", "NAME", "--seeds", "1"],
        ["defences", "NAME"],
        ["reproduce", "NAME"],
        ["show", "NAME"],
        ["analyze", "NAME"],
        ["report", "NAME"],
        ["disclose", "--db", "NAME", "--process", "subpoena"],
    ],
)
def test_an_error_is_one_line_whatever_the_name_given_holds(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A name holding a line break or an escape sequence (``relaysim run $'a\\nb.toml'``, a folder
    named so in a listing) was printed as it is in the error: two lines, or a terminal told to
    change colour. It is shown escaped, as the views show a scenario's words (sims.term.printable)."""
    monkeypatch.chdir(tmp_path)
    name = "x\x1b[31mred\nnext\u202e.toml"
    assert main([name if a == "NAME" else a for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err and "\u202e" not in err, err
    assert "x\\x1b[31mred\\x0anext\\u202e.toml" in err, err
    assert list(tmp_path.iterdir()) == []


def test_broken_pipe_is_quiet(tf_run: Path) -> None:
    """``relaysim show DIR | head -c 10``: the reader goes away; no traceback, no 'Exception ignored'.
    (Each row is padded to half the width, so this writes far more than a pipe holds.)"""
    proc = subprocess.Popen(
        [sys.executable, "-m", "relaysim.sims.cli", "show", str(tf_run), "--width", "50000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()  # the reader closes early, as head does
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert proc.returncode in (0, 1), (proc.returncode, err)


def test_ctrl_c_during_a_long_run_exits_130_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "city"
    proc = subprocess.Popen(
        [sys.executable, "-m", "relaysim.sims.cli", "run", "city", "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        # SIGINT as a terminal's Ctrl-C delivers it, whoever runs the tests: a shell's background job
        # (pytest ... &) ignores SIGINT, a child inherits that, and Python leaves it ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not (out / "transcript.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (out / "transcript.jsonl").exists(), "the run never started"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, stderr)
    assert "Traceback" not in stderr, stderr
    assert stderr.count("\n") == 1 and "interrupted" in stderr, stderr
    # ... and show on what it left says so, without a traceback
    res = cli("show", str(out))
    assert_clean_error(res, "did not finish")


_INTERRUPTED_INSIDE_EXEC = """
import sys
import relaysim.sims.cli as cli

def dispatch(args):
    # as a module imported mid-run makes its dataclasses: methods compiled from source by exec
    exec("import time\\nprint('ready', flush=True)\\ntime.sleep(60)")
    return 0

cli._dispatch = dispatch
sys.argv = ["relaysim", "scenarios"]
if __name__ == "__main__":
    cli.command()
"""


def test_ctrl_c_that_passes_through_an_exec_still_exits_130(tmp_path: Path) -> None:
    """CPython marks a KeyboardInterrupt that passed through an ``exec`` of source as unhandled,
    though ``main`` handled it, and would end the process by SIGINT (-2 to waitpid; seen in CI, a
    Ctrl-C landing while ``run city`` imported a module); ``command`` exits with 130 as promised."""
    # run as a module (-m), as the relaysim command runs: with -c the interpreter exits from
    # inside its SystemExit handling and never looks at the flag
    (tmp_path / "interrupted_in_exec.py").write_text(_INTERRUPTED_INSIDE_EXEC, encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "interrupted_in_exec"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT), str(tmp_path)))},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, stderr)
    assert stderr == "relaysim scenarios: interrupted\n", stderr


def test_show_on_a_run_killed_before_its_summary(tmp_path: Path, tf_run: Path) -> None:
    out = tmp_path / "killed"
    out.mkdir()
    lines = (tf_run / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    (out / "transcript.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:17], encoding="utf-8")
    res = cli("show", str(out))
    assert_clean_error(res, "did not finish", "summary.json")


def test_show_on_a_truncated_transcript_names_the_line(tmp_path: Path, tf_run: Path) -> None:
    out = tmp_path / "truncated"
    out.mkdir()
    lines = (tf_run / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    (out / "transcript.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:17], encoding="utf-8")
    (out / "summary.json").write_bytes((tf_run / "summary.json").read_bytes())
    res = cli("show", str(out))
    assert_clean_error(res, "transcript.jsonl", "line 6")


def test_show_on_a_truncated_summary(tmp_path: Path, tf_run: Path) -> None:
    out = tmp_path / "half-summary"
    out.mkdir()
    (out / "transcript.jsonl").write_bytes((tf_run / "transcript.jsonl").read_bytes())
    (out / "summary.json").write_text((tf_run / "summary.json").read_text(encoding="utf-8")[:40])
    res = cli("show", str(out))
    assert_clean_error(res, "summary.json", "not valid JSON")


def test_disclose_on_an_account_the_relay_never_had(tf_run: Path) -> None:
    res = cli("disclose", "--db", str(tf_run / "relay.db"), "--process", "subpoena", "--target", "amria")
    assert_clean_error(res, "'amria'", "no account", "amira")
    assert res.stdout == ""


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--process", "subpeona", "--target", "amira"], ["invalid choice: 'subpeona'"]),
        (["--process", "subpoena", "--target", "amira", "--to", "soon"], ["--to", "'soon'"]),
        (
            ["--process", "court_order_2703d", "--target", "amira", "--from", "3h", "--to", "1h"],
            ["--to", "after"],
        ),
        (["--process", "subpoena", "--target", "amira", "--at", "-1h"], ["--at"]),
        (["--process", "subpoena", "--target", "amira", "--at", "nan"], ["--at 'nan'", "non-negative"]),
        (["--process", "subpoena", "--target", "amira", "--at", "inf"], ["--at 'inf'", "non-negative"]),
        # a time past the longest run (365 days) was taken, and answered "Nothing."
        (["--process", "subpoena", "--target", "amira", "--at", "1e308"], ["--at '1e308'", '"365d"']),
        (["--process", "subpoena", "--target", "amira", "--at", "366d"], ["--at '366d'", '"365d"']),
        (
            ["--process", "court_order_2703d", "--target", "amira", "--from", "0", "--to", "1e308"],
            ["--to '1e308'", '"365d"'],
        ),
        # --json "" (an unset shell variable): it wrote no file and said nothing
        (["--process", "subpoena", "--target", "amira", "--json", ""], ["--json", "expected a file's path"]),
        # a reporting period that would start after service (it printed "from 02:00:00 to 01:00:00")
        (
            ["--process", "court_order_2703d", "--target", "amira", "--at", "1h", "--from", "2h"],
            ["--from '2h'", "at or after the order is served"],
        ),
    ],
)
def test_disclose_refuses_wrong_options(tf_run: Path, extra: list[str], needles: list[str]) -> None:
    res = cli("disclose", "--db", str(tf_run / "relay.db"), *extra)
    assert_clean_error(res, *needles)


def test_disclose_takes_bare_seconds_as_the_readme_says(tf_run: Path) -> None:
    res = cli(
        "disclose",
        "--db",
        str(tf_run / "relay.db"),
        "--process",
        "court_order_2703d",
        "--target",
        "ben",
        "--at",
        "90",
        "--from",
        "0",
    )
    assert res.returncode == 0, res.stderr
    assert "Served at:** 00:01:30" in res.stdout and "from 00:00:00" in res.stdout


def test_disclose_on_a_missing_or_wrong_db(tmp_path: Path) -> None:
    res = cli("disclose", "--db", str(tmp_path / "nope.db"), "--process", "subpoena", "--target", "a")
    assert_clean_error(res, "nope.db", "no such file")
    junk = tmp_path / "junk.db"
    junk.write_text("not a database\n" * 100, encoding="utf-8")
    res = cli("disclose", "--db", str(junk), "--profile", "signal", "--process", "subpoena", "--target", "a")
    assert_clean_error(res, "junk.db")
    # a database, but not a relay's (or an empty file, which SQLite takes for an empty database): it
    # answered as a relay that never had anyone ("complied" to a demand on everyone)
    import sqlite3

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE foo (x)")
    con.close()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    for db in (other, empty):
        res = cli("disclose", "--db", str(db), "--profile", "signal", "--process", "pta_demand")
        assert_clean_error(res, db.name, "not a relay store")  # (the words analyze and report give)


def test_disclose_on_a_path_that_is_there_but_no_file_says_what_it_is(tmp_path: Path) -> None:
    """``--db /dev/null`` said "no such file" of a path that is there."""
    argv = ("--profile", "signal", "--process", "pta_demand")
    for db, what in (("/dev/null", "not a regular file (a device)"), (str(tmp_path), "a folder")):
        if Path(db).exists():
            assert_clean_error(cli("disclose", "--db", db, *argv), f"--db {db}: {what};")
    if hasattr(os, "mkfifo"):
        pipe = tmp_path / "relay.db"
        os.mkfifo(pipe)
        assert_clean_error(cli("disclose", "--db", str(pipe), *argv), f"{pipe}: not a regular file (a pipe);")


def test_disclose_on_a_store_it_cannot_open_names_the_file_given(tmp_path: Path, tf_run: Path) -> None:
    """disclose opens a copy of the store, in a temporary folder: the store's refusal (a newer schema, a
    table gone) named that copy, a path that was gone by the time it was read."""
    import sqlite3

    run = tmp_path / "run"
    run.mkdir()
    db = run / "relay.db"
    (run / "provider.json").write_bytes((tf_run / "provider.json").read_bytes())
    for change, said in (
        ("PRAGMA user_version = 1000", "schema version 1000 is newer"),
        ("DROP TABLE server_identity", "without its server_identity table: damaged or changed by hand"),
    ):
        db.write_bytes((tf_run / "relay.db").read_bytes())
        con = sqlite3.connect(db)
        con.execute(change)
        con.commit()
        con.close()
        res = cli("disclose", "--db", str(db), "--process", "subpoena", "--target", "amira")
        assert_clean_error(res, f"--db {db}: ", said)
        assert "relaysim-disclose-" not in res.stderr, res.stderr


def test_disclose_with_a_damaged_provider_file(tmp_path: Path, tf_run: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "relay.db").write_bytes((tf_run / "relay.db").read_bytes())
    (run / "provider.json").write_text('{"profile": "sig', encoding="utf-8")
    res = cli("disclose", "--db", str(run / "relay.db"), "--process", "subpoena", "--target", "amira")
    assert_clean_error(res, "provider.json")


def test_disclose_on_an_older_live_runs_database_says_it_was_made_before_live_runs_wrote_a_provider_file(
    tmp_path: Path, tf_run: Path
) -> None:
    """A live run (relaysim run --live) made before live runs wrote provider.json: disclose on its relay.db
    without --profile said only "no --profile, and no .../provider.json", as if the file had been lost. It
    says the folder is such a live run's, where its timeline's orders were answered, and which --profile to
    give; a simulated run's folder that lost provider.json is told as before."""
    summary = json.loads((tf_run / "summary.json").read_text(encoding="utf-8"))
    runs = {}
    for name, live in (("live", True), ("lost", False)):
        run = _part_of(tf_run, tmp_path / name, "relay.db")
        (run / "summary.json").write_text(
            json.dumps(summary | ({"live": {"time_scale": 0.001}} if live else {})), encoding="utf-8"
        )
        runs[name] = cli(
            "disclose", "--db", str(run / "relay.db"), "--process", "subpoena", "--target", "amira"
        )
    assert_clean_error(
        runs["live"],
        "no --profile",
        "a live run (relaysim run --live) made before live runs wrote one",
        str(tmp_path / "live" / "disclosures"),
        "--profile",
    )
    assert_clean_error(runs["lost"], "no --profile", "provider.json")
    assert "live run" not in runs["lost"].stderr, runs["lost"].stderr


def test_disclose_with_profile_on_an_older_live_runs_database_shows_the_relays_wall_clock(
    tmp_path: Path, tf_run: Path
) -> None:
    """A live run made before live runs wrote provider.json: its relay kept the wall clock, and the run's
    start and time scale are unknown. disclose --profile read its times against the simulator's own start
    ("Served at: day 339 01:31:55", a day of no run); it shows them as the relay's wall clock, dated, and
    says why."""
    summary = json.loads((tf_run / "summary.json").read_text(encoding="utf-8"))
    run = _part_of(tf_run, tmp_path / "live", "relay.db")
    (run / "summary.json").write_text(json.dumps(summary | {"live": {"time_scale": 0.001}}), encoding="utf-8")
    argv = ["disclose", "--db", str(run / "relay.db"), "--process", "search_warrant", "--target", "amira"]
    res = cli(*argv, "--profile", "keep-everything")
    assert res.returncode == 0, res.stderr
    assert "made before live runs wrote one" in res.stderr and "wall clock (UTC)" in res.stderr, res.stderr
    # served at the last moment the store knows of (here 4h into a simulated run's day: its last message)
    assert "Served at:** 2026-01-01 04:00:00 UTC" in res.stdout, res.stdout
    assert "day " not in res.stdout, res.stdout
    # a time since the run's start cannot be read on its relay's clock: it was read from the simulator's own
    # start, a day of no live run (2026-01-01, "Nothing."), and is refused, saying why and what to do
    for option in ("--at", "--from", "--to"):
        res = cli(*argv, "--profile", "keep-everything", option, "30m")
        assert_clean_error(
            res, f"{option} '30m': ", "made before live runs wrote provider.json", f"leave out {option}"
        )


def _disclose_json(run: Path, json_to: Path | str) -> list[str]:
    return [
        "disclose", "--db", str(run / "relay.db"), "--process", "subpoena", "--target", "amira",
        "--json", str(json_to),
    ]  # fmt: skip


def test_disclose_json_to_a_symbolic_link_to_nothing_is_refused_before_serving(
    tmp_path: Path, tf_run: Path
) -> None:
    """``--json LINK``, LINK a link to a file not there: the file was made where the link pointed
    (anywhere: a link left in a shared /tmp). Refused, as ``--out`` refuses such a link, naming it
    and its target, before the order is served (nothing printed)."""
    link, target = tmp_path / "d.json", tmp_path / "elsewhere" / "made.json"
    (tmp_path / "elsewhere").mkdir()
    link.symlink_to(target)
    res = cli(*_disclose_json(tf_run, link))
    assert_clean_error(res, f"--json: {link} is a symbolic link to {target}, which does not exist")
    assert res.stdout == ""
    assert not target.exists() and link.is_symlink()


def test_disclose_json_where_it_cannot_be_written_is_refused_before_serving(
    tmp_path: Path, tf_run: Path
) -> None:
    """It printed the disclosure, then said the file could not be written."""
    for given, said in (
        (tmp_path / "missing" / "d.json", f"{tmp_path / 'missing' / 'd.json'}: its folder"),
        (tmp_path, f"{tmp_path} is a folder; give a file's path"),
    ):
        res = cli(*_disclose_json(tf_run, given))
        assert_clean_error(res, "--json", said)
        assert res.stdout == ""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_disclose_json_into_a_named_pipe_writes_into_it_never_over_it(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json FILE is written whole (a copy renamed over FILE); a FILE that is a device or a pipe was
    replaced by the copy, a regular file in its place: --json /dev/null, run as root, put a file
    where /dev/null was, for every program on the machine (cli9's fuzz did). A device or a pipe
    that is there is now written into, as a shell's redirection writes it. (Shown on a named pipe
    in a folder of the test's own: the same path, never /dev/null.)"""
    import stat
    import threading

    pipe = tmp_path / "out.json"
    os.mkfifo(pipe)
    read: list[bytes] = []
    reader = threading.Thread(target=lambda: read.append(pipe.read_bytes()), daemon=True)
    reader.start()
    argv = ["disclose", "--db", str(tf_run / "relay.db"), "--process", "subpoena", "--target", "amira"]
    assert main([*argv, "--json", str(pipe)]) == 0
    reader.join(timeout=60)  # (a hang made a failure: without the change no writer ever opens it)
    capsys.readouterr()
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    assert read and json.loads(read[0])["target"] == "amira"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_disclose_json_into_a_named_pipe_nothing_reads_is_not_waited_on_for_ever(
    tf_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json FIFO with no program reading the pipe waited in open() for ever once the disclosure was
    made, saying nothing (cli13's fuzz). It waits PIPE_READER_WAIT seconds for a reader, then says so,
    and keeps the disclosure in a file it names (it was lost). (A thread runs main: without the change it never returns, and the join's timeout fails the test.)"""
    import stat
    import threading

    from relaysim.sims.analysis import runfiles

    monkeypatch.setattr(runfiles, "PIPE_READER_WAIT", 0.3)
    pipe = tmp_path / "out.json"
    os.mkfifo(pipe)
    argv = ["disclose", "--db", str(tf_run / "relay.db"), "--process", "subpoena", "--target", "amira"]
    status: list[int] = []
    runner = threading.Thread(target=lambda: status.append(main([*argv, "--json", str(pipe)])), daemon=True)
    runner.start()
    runner.join(timeout=60)
    if runner.is_alive():  # (let it go: open it for reading, once, so the test process can end)
        with open(os.open(pipe, os.O_RDONLY | os.O_NONBLOCK), "rb"):
            runner.join(timeout=10)
    assert status == [2]
    err = capsys.readouterr().err
    assert f"--json {pipe}: cannot write it: a pipe (FIFO) that nothing read from for 0.3 s" in err, err
    # the disclosure is not lost with the pipe (it was: "announced, not kept"): it is in a file of
    # its own beside it, which the error names
    kept = [p for p in tmp_path.iterdir() if p.name != "out.json"]
    assert len(kept) == 1 and kept[0].name.startswith("out.json."), (kept, err)
    assert f"is kept in {kept[0]} instead" in err, err
    assert json.loads(kept[0].read_text(encoding="utf-8"))["target"] == "amira"
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)
    # the wait is said as it starts (it was said only once over, the disclosure lost): a reader
    # started then is in time
    waiting = f"relaysim: {pipe} is a pipe (FIFO) that nothing reads yet: waiting up to 0.3 s"
    assert err.count(waiting) == 1 and err.index(waiting) < err.index("cannot write it"), err


def test_every_json_options_help_says_how_long_a_pipe_is_waited_on() -> None:
    """A --json FIFO whose reader starts after PIPE_READER_WAIT seconds is refused (a command whose
    reader never comes must end): --help said nothing of it."""
    import importlib

    from relaysim.sims.analysis.runfiles import PIPE_READER_WAIT
    from relaysim.sims.cli import build_parser

    parsers = {"disclose": build_parser()._subparsers._group_actions[0].choices["disclose"]}  # type: ignore[union-attr]
    for name in ("crypto", "relay", "attack", "sim", "analysis", "sweep"):
        parsers[f"bench {name}"] = importlib.import_module(f"relaysim.sims.bench.{name}")._parser()
    for name, parser in parsers.items():
        text = " ".join(parser.format_help().split())
        said = f"a named pipe (FIFO) is waited on for a reader for at most {PIPE_READER_WAIT:g} s"
        assert said in text, (name, text)


def test_disclose_json_replaces_a_file_whole_or_not_at_all(
    tmp_path: Path, tf_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An existing FILE is replaced (as before), through a link to it the file it points to (the
    link stays); a write that fails leaves the file as it was (it was truncated, then half written)
    and nothing beside it."""
    old = tmp_path / "d.json"
    old.write_text("earlier\n", encoding="utf-8")
    old.chmod(0o640)
    link = tmp_path / "link.json"
    link.symlink_to(old.name)
    assert main(_disclose_json(tf_run, link)) == 0
    assert link.is_symlink() and json.loads(old.read_text(encoding="utf-8"))["name"] == "subpoena-amira"
    assert old.stat().st_mode & 0o777 == 0o640
    whole = old.read_bytes()
    capsys.readouterr()

    def no_space(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", no_space)
    assert main(_disclose_json(tf_run, old)) == 2
    assert f"--json {old}: cannot write it: No space left on device" in capsys.readouterr().err
    assert old.read_bytes() == whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "link.json"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("argv", "written"),
    [
        (
            ["analyze", "DIR"],
            ["analysis/relay.json", "analysis/relay.md", "analysis/search-warrant-amira.json"],
        ),
        (["analyze", "DIR", "--as-seen"], ["analysis/as-seen/relay.json", "analysis/as-seen/relay.md"]),
        (["report", "DIR"], ["report.html"]),
    ],
)
def test_analyze_and_report_replace_their_files_whole_or_not_at_all(
    argv: list[str],
    written: list[str],
    tmp_path: Path,
    tf_run: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """analysis/NAME.json and .md and report.html were written in place: a write that failed (the
    disk full) left the file truncated and half written. Now a failed write leaves each as it was,
    nothing beside it, and is said naming the file (analyze said "[Errno 28] No space left on device")."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tf_run, run)
    argv = [str(run) if a == "DIR" else a for a in argv]
    assert main(argv) == 0
    for name in written:
        assert (run / name).stat().st_size > 0, name
        (run / name).write_text("earlier\n", encoding="utf-8")
    before = _files(run)
    capsys.readouterr()

    def no_space(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", no_space)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert any(f"{run / name}: No space left on device" in err for name in written), err  # (the file named)
    assert _files(run) == before


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (errno.ENOSPC, "; free some space, or give a folder on another disk"),
        (errno.EROFS, "; copy the folder somewhere writable, or give another folder"),
        (errno.EIO, ""),
    ],
)
def test_bench_json_that_cannot_be_written_is_one_line_through_main(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    code: int,
    hint: str,
) -> None:
    """A bench's --json FILE is written at its end (runfiles.write_whole), after the numbers are
    measured; the OSError of a write that fails there is said by cli.main as every command's is:
    one line on stderr naming FILE, the system's reason and what to do, exit 2, no traceback, and
    FILE as it was, with nothing left beside it. (test_bench_json_replaces_a_file_whole_or_not_at_all
    calls harness.finish alone: nothing showed how the command said it.)"""
    out = tmp_path / "bench.json"
    out.write_text("earlier\n", encoding="utf-8")

    def fails(src: object, dst: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", fails)
    argv = ["bench", "analysis", "--messages", "2000", "--people", "100", "--repeat", "1", "--quiet"]
    assert main([*argv, "--json", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"relaysim bench: {out}: {os.strerror(code)}{hint}\n", captured.err
    assert "sealed" in captured.out  # (the table, printed before the JSON is written)
    assert out.read_text(encoding="utf-8") == "earlier\n"
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]


LONG = "x" * 5000


@pytest.mark.parametrize(
    "argv",
    [
        ["disclose", "--db", "DB", "--process", "subpoena", "--target", LONG],
        ["disclose", "--db", "DB", "--process", "subpoena", "--target", "amira", "--at", LONG],
        [
            "disclose",
            "--db",
            "DB",
            "--process",
            "court_order_2703d",
            "--target",
            "amira",
            "--from",
            f"1h{' ' * 5000}",
            "--to",
            "1h",
        ],
        ["sweep", "two-friends", "--param", f"network.loss=0,{LONG}", "--seeds", "1", "--out", "OUT"],
        ["sweep", "two-friends", "--param", f"network.{LONG}=0", "--seeds", "1", "--out", "OUT"],
        ["sweep", "two-friends", "--param", f"{LONG}.x", "--seeds", "1", "--out", "OUT"],
        ["run", "SCENARIO", "--out", "OUT"],
        ["show", "RUN", "--width", LONG],
    ],
)
def test_a_long_word_given_is_shown_cut_short_in_an_error(
    argv: list[str], tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An option's word, or a scenario's key, of 5,000 characters was shown whole in the error that
    refused it (disclose's --target, --at, --from; sweep's --param, in its own words and in the label
    of the cell it prefixes each scenario error with; an unknown key of a scenario): one line of
    5,000 characters and more. Now each is shown as a scenario's values are (runfiles.brief): the
    first 80 characters and how long it was."""
    scenario = tmp_path / "long-key.toml"
    scenario.write_text(f'[scenario]\nname = "k"\nduration = 10\n{LONG} = 1\n', encoding="utf-8")
    where = {"DB": str(tf_run / "relay.db"), "OUT": str(tmp_path / "out"), "SCENARIO": str(scenario)}
    argv = [where.get(a, a) for a in argv]
    if "RUN" in argv:  # an option's type: argparse's usage, then its line
        with pytest.raises(SystemExit) as exit_:
            main([str(tf_run) if a == "RUN" else a for a in argv])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.splitlines()[-1] + "\n"
    else:
        assert main(argv) == 2
        err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" not in err, err[:300]
    assert len(err) < 700 and "characters)" in err, err[:300]


def test_a_long_metric_is_shown_cut_short_in_its_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sweep", "two-friends", "--param", "network.loss=0", "--metric", LONG, "--seeds", "1"]
    assert main([*argv, "--out", str(tmp_path / "out"), "--quiet"]) == 2  # (refused: no run can have it)
    err = capsys.readouterr().err
    assert err.startswith("relaysim sweep: --metric xxx"), err[:300]
    assert "… (5,000 characters): no run's summary.json has a number there: summary.json has no xxx" in err
    assert err.count("x" * 100) == 0 and err.count("\n") == 1, err[:300]  # (never whole: the key cut too)
    assert not (tmp_path / "out").exists()  # (refused before any run)
    for metric, said in (
        ("relay_records." + LONG, "no number at that path in any run's summary.json"),  # (the runs' to say)
        ("disclosures." + LONG + ".score.contacts.share", "names no legal order of the scenario"),  # (before)
    ):
        again = [*argv[:4], "--metric", metric, *argv[6:]]
        assert main([*again, "--out", str(tmp_path / "out"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "… (5,0" in err and f"characters): {said}" in err, err[:300]
        assert err.count("x" * 100) == 0 and err.count("\n") == 1, err[:300]


# --- permissions: a file that cannot be read, a folder that cannot be written ------------------------

# File modes do not stop root (nor hold on Windows, which has no geteuid): there these tests would
# find every file readable and every folder writable, and prove nothing.
needs_file_modes = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="file modes are not enforced for root"
)


@contextlib.contextmanager
def _mode(path: Path, mode: int) -> Iterator[Path]:
    """``path`` with ``mode`` for the block, its own mode again after (so pytest can remove it)."""
    before = path.stat().st_mode & 0o7777
    path.chmod(mode)
    try:
        yield path
    finally:
        path.chmod(before)


@needs_file_modes
@pytest.mark.parametrize(
    "argv",
    [
        ["run", "FILE", "--quiet"],
        ["sweep", "FILE", "--seeds", "1", "--quiet"],
        ["defences", "FILE"],
        ["demo", "--scenario", "FILE"],
    ],
)
def test_a_scenario_file_that_cannot_be_read_is_named(argv: list[str], tmp_path: Path) -> None:
    scenario = tmp_path / "mine.toml"
    scenario.write_bytes((ROOT / "relaysim" / "sims" / "scenarios" / "two-friends.toml").read_bytes())
    with _mode(scenario, 0):
        res = cli(*[str(scenario) if a == "FILE" else a for a in argv], "--out", str(tmp_path / "o"))
    assert_clean_error(res, f"{scenario}: cannot read the file: Permission denied")
    assert res.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()


@needs_file_modes
@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["run", "two-friends", "--quiet", "--out", "RO"],
            "cannot write RO/transcript.jsonl: Permission denied",
        ),
        (["run", "two-friends", "--quiet", "--out", "RO/new"], "cannot write to RO/new: Permission denied"),
        (["sweep", "two-friends", "--seeds", "1", "--quiet", "--out", "RO/new"], "RO/new: Permission denied"),
        (["chart", "RO"], "cannot write RO/"),
        (
            [
                "disclose",
                "--db",
                "RUN/relay.db",
                "--process",
                "subpoena",
                "--target",
                "amira",
                "--json",
                "RO/d.json",
            ],
            "argument --json: RO/d.json: cannot write there (permission denied)",
        ),
    ],
)
def test_an_output_folder_that_cannot_be_written_is_named_and_nothing_is_left_in_it(
    argv: list[str], said: str, tmp_path: Path, tf_run: Path
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    with _mode(ro, 0o555):
        res = cli(*[a.replace("RO", str(ro)).replace("RUN", str(tf_run)) for a in argv])
        assert_clean_error(res, said.replace("RO", str(ro)))
        assert list(ro.iterdir()) == []
    assert "Handed over" not in res.stdout  # (disclose: refused before the order is served)


@needs_file_modes
@pytest.mark.parametrize(
    ("command", "said"),
    [
        ("analyze", "RUN/analysis: Permission denied; check its permissions"),
        ("report", "cannot write RUN/report.html: Permission denied"),
    ],
)
def test_a_finished_run_in_a_folder_that_cannot_be_written_is_named(
    command: str, said: str, tmp_path: Path, tf_run: Path
) -> None:
    run = _part_of(tf_run, tmp_path / "run", "provider.json", "summary.json", "transcript.jsonl", "relay.db")
    with _mode(run, 0o555):
        res = cli(command, str(run))
        assert_clean_error(res, said.replace("RUN", str(run)))
        assert sorted(p.name for p in run.iterdir()) == [
            "provider.json",
            "relay.db",
            "summary.json",
            "transcript.jsonl",
        ]


@needs_file_modes
@pytest.mark.parametrize(
    ("argv", "said"),
    [
        # SQLite said only "unable to open database file", and the store was blamed for it
        (["analyze", "RUN"], "RUN/relay.db: cannot read it: Permission denied; check its permissions"),
        (["report", "RUN"], "RUN/relay.db: cannot read it: Permission denied; check its permissions"),
        # it said "check its permissions, or give another folder", of a file
        (
            ["disclose", "--db", "RUN/relay.db", "--process", "subpoena", "--target", "amira"],
            "--db RUN/relay.db: cannot read RUN/relay.db: Permission denied; check its permissions",
        ),
    ],
)
def test_a_run_whose_database_cannot_be_read_says_so_not_that_it_is_no_store(
    argv: list[str], said: str, tmp_path: Path, tf_run: Path
) -> None:
    run = _part_of(tf_run, tmp_path / "run", "provider.json", "summary.json", "transcript.jsonl", "relay.db")
    with _mode(run / "relay.db", 0):
        res = cli(*[a.replace("RUN", str(run)) for a in argv])
    assert_clean_error(res, said.replace("RUN", str(run)))
    assert "relay store" not in res.stderr, res.stderr


# --- part 6: conventions -----------------------------------------------------------------------------


def test_disclose_json_dash_writes_json_to_stdout(tf_run: Path, tmp_path: Path) -> None:
    res = cli(
        "disclose", "--db", str(tf_run / "relay.db"), "--process", "subpoena", "--target", "amira",
        "--json", "-", cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert (data["process"], data["target"]) == ("subpoena", "amira")
    assert not (tmp_path / "-").exists()


def test_version() -> None:
    from importlib.metadata import version

    res = cli("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"relaysim {version('relaysim')}"


SUBCOMMANDS = [
    "demo",
    "scenarios",
    "run",
    "show",
    "bench",
    "disclose",
    "analyze",
    "report",
    "chart",
    "relay",
    "sweep",
    "defences",
    "reproduce",
]


def test_the_subcommand_list_is_every_subcommand() -> None:
    """SUBCOMMANDS lacked report and sweep: their help went unchecked for an example and for paths
    outside the repository. It is every subcommand ``relaysim --help`` lists, in its order."""
    import argparse

    from relaysim.sims.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(subparsers.choices) == SUBCOMMANDS


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_help_teaches_with_an_example(command: str) -> None:
    res = cli(command, "--help")
    assert res.returncode == 0, res.stderr
    assert "example" in res.stdout
    example_lines = [
        line for line in res.stdout.splitlines() if line.strip().startswith(f"relaysim {command}")
    ]
    assert example_lines, res.stdout


def test_help_and_docs_cite_only_files_in_the_repository() -> None:
    texts = {
        p: (ROOT / p).read_text(encoding="utf-8")
        for p in ("sims/cli.py", "sims/demo.py", "sims/report.py", "README.md")
    }
    texts["relaysim --help"] = cli("--help").stdout
    for command in SUBCOMMANDS:
        texts[f"relaysim {command} --help"] = cli(command, "--help").stdout
    for where, text in texts.items():
        for bad in ("shared/", "/work/", "/home/", "/tmp/"):
            assert bad not in text, (where, bad)


# --- part 5: outputs a user can trust ------------------------------------------------------------------


def test_out_holding_an_earlier_run_is_refused_without_force(tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert main(["run", "two-friends", "--out", str(out), "--quiet"]) == 0
    before = (out / "summary.json").read_bytes()
    res = cli("run", "signal-subpoena-2016", "--out", str(out), "--quiet")
    assert_clean_error(res, str(out), "--force")
    assert (out / "summary.json").read_bytes() == before


def test_force_removes_only_relaysims_files_and_no_stale_disclosure_survives(tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert main(["run", "two-friends", "--out", str(out), "--quiet"]) == 0
    old = {p.name for p in (out / "disclosures").iterdir()}
    assert old
    assert main(["analyze", str(out)]) == 0 and (out / "analysis").is_dir()
    (out / "notes.txt").write_text("my notes\n", encoding="utf-8")
    (out / "mine").mkdir()
    (out / "mine" / "a.md").write_text("x", encoding="utf-8")
    assert main(["run", "signal-subpoena-2016", "--out", str(out), "--quiet", "--force"]) == 0
    new = {p.name for p in (out / "disclosures").iterdir()}
    fresh = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert new == {f"{d['name']}.{ext}" for d in fresh["disclosures"] for ext in ("json", "md")}
    assert old - new, "the second scenario serves different orders, so some disclosures are stale"
    for stale in old - new:
        assert not (out / "disclosures" / stale).exists(), stale
    assert not (out / "analysis").exists()  # the earlier run's analysis pages went with it
    assert (out / "notes.txt").read_text(encoding="utf-8") == "my notes\n"
    assert (out / "mine" / "a.md").exists()


def test_force_clears_per_profile_folders_of_an_earlier_comparison(tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert main(["run", "pakistan-2015", "--out", str(out), "--quiet"]) == 0
    assert (out / "bes" / "transcript.jsonl").exists()
    assert (out / "counterfactual.md").exists() and (out / "counterfactual").is_dir()
    assert main(["run", "two-friends", "--out", str(out), "--quiet", "--force"]) == 0
    assert not (out / "bes").exists() and not (out / "comparison.md").exists()
    assert not (out / "counterfactual").exists() and not (out / "counterfactual.md").exists()
    assert main(["show", str(out)]) == 0


def _part_of(run: Path, folder: Path, *names: str) -> Path:
    """``folder``, made, holding copies of ``names`` from the finished ``run`` (and nothing else)."""
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes((run / name).read_bytes())
    return folder


def test_chart_never_overwrites_another_runs_summary(tmp_path: Path, tf_run: Path) -> None:
    out = _part_of(tf_run, tmp_path / "tf", "summary.json", "transcript.jsonl", "relay.db")
    res = cli("chart", str(out))
    assert_clean_error(res, str(out))
    assert (out / "summary.json").read_bytes() == (tf_run / "summary.json").read_bytes()
    assert not (out / "matrix.json").exists()


def test_transcript_has_one_time_base(tf_run: Path) -> None:
    """``t`` is simulated seconds from the start, ``at`` the same instant as ISO 8601 UTC on the
    simulated calendar; every other time in the transcript is simulated seconds from the start."""
    from datetime import UTC, datetime, timedelta

    from relaysim.sims.world.simulation import SIM_EPOCH

    start = datetime.fromtimestamp(SIM_EPOCH, UTC)
    events = [
        json.loads(line) for line in (tf_run / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert events
    for e in events:
        assert list(e)[:2] == ["t", "at"], e
        assert datetime.fromisoformat(e["at"]) == start + timedelta(seconds=e["t"]), e
        for rec in e.get("relay") or []:
            if isinstance(rec, dict) and "time" in rec:
                assert 0 <= rec["time"] <= e["t"] + 1e-6, rec
        relay = e.get("relay")
        if e["kind"] == "message_received":
            assert "accepted_ms" not in relay
            assert 0 <= relay["accepted"] <= e["t"]
            assert 0 <= relay["delivery"]["time"] <= e["t"] + 1e-6


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("profile_as_of", "May 2016", "profile_as_of: expected a date like 2016-05-01, got 'May 2016'"),
        ("clock_epoch", "soon", "clock_epoch: expected Unix seconds (a number), got 'soon'"),
    ],
)
def test_disclose_with_a_bad_date_in_the_provider_file(
    tmp_path: Path, tf_run: Path, field: str, value: str, needle: str
) -> None:
    """A dated run's provider.json names its calendar (clock_epoch) and its profile's date
    (profile_as_of); a damaged one is named, field and value, not a traceback."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "relay.db").write_bytes((tf_run / "relay.db").read_bytes())
    provider = json.loads((tf_run / "provider.json").read_text(encoding="utf-8"))
    (run / "provider.json").write_text(json.dumps(provider | {field: value}), encoding="utf-8")
    res = cli("disclose", "--db", str(run / "relay.db"), "--process", "subpoena", "--target", "amira")
    assert_clean_error(res, "provider.json", needle)
    if field == "clock_epoch":
        assert_clean_error(cli("analyze", str(run)), "provider.json", "clock_epoch: expected Unix seconds")


# --- the file system says no: a clear line with the path and the reason, exit 2 ---------------------


def test_a_file_where_a_folder_belongs_is_the_users_to_fix_not_an_internal_error(
    tmp_path: Path, tf_run: Path
) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder\n", encoding="utf-8")
    res = cli(
        "sweep", "two-friends", "--param", "network.loss=0", "--seeds", "1", "--out", str(blocker), "--quiet"
    )
    assert_clean_error(res, f"{blocker}/runs", "a file stands where a folder belongs")
    assert "internal error" not in res.stderr
    run = _part_of(tf_run, tmp_path / "tf", "relay.db", "provider.json", "summary.json", "transcript.jsonl")
    (run / "analysis").write_text("a file, not the folder analyze writes\n", encoding="utf-8")
    res = cli("analyze", str(run))
    assert_clean_error(res, f"{run}/analysis", "a file stands where a folder belongs")


def test_report_on_a_run_folder_without_its_database_says_so(tmp_path: Path, tf_run: Path) -> None:
    run = _part_of(tf_run, tmp_path / "nodb", "provider.json", "summary.json", "transcript.jsonl")
    res = cli("report", str(run))
    assert_clean_error(res, f"{run}/relay.db", "no such file")
    assert "internal error" not in res.stderr


def test_a_bench_json_path_that_cannot_be_written_is_refused_before_anything_is_measured(
    tmp_path: Path,
) -> None:
    res = cli("bench", "sweep", "--runs", "5", "--json", str(tmp_path / "missing" / "x.json"), timeout=30)
    assert_clean_error(res, "--json", "does not exist")
    assert "speed-up" not in res.stdout  # nothing ran
    res = cli("bench", "crypto", "--json", str(tmp_path), timeout=30)
    assert_clean_error(res, "--json", "is a folder")
    res = cli("bench", "crypto", "--json", "", timeout=30)  # it said " is a folder"
    assert_clean_error(res, "--json", "expected a file's path (or -, for stdout), got ''")
    link = tmp_path / "b.json"  # a link to nothing was written through, as disclose's --json was
    link.symlink_to(tmp_path / "made.json")
    res = cli("bench", "crypto", "--json", str(link), timeout=30)
    assert_clean_error(
        res, f"--json: {link} is a symbolic link to {tmp_path / 'made.json'}, which does not exist"
    )
    assert not (tmp_path / "made.json").exists()


def test_a_finished_run_on_read_only_media_is_read_without_its_shared_memory_file(
    tmp_path: Path, tf_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite cannot read a WAL database in mode=ro where it cannot make the -shm file (a read-only
    mount, a USB stick): "unable to open database file", blaming a healthy store. With no write-ahead
    log beside it the store is whole and is read as immutable (the first way it is opened now: mode=ro
    made -wal and -shm beside it in a folder it could write, and left them); with one, a copy of both
    is read, in a temporary folder of its own (it was refused: reading past the log would miss it)."""
    import sqlite3

    from relaysim.sims.analysis import view

    db = tmp_path / "relay.db"
    db.write_bytes((tf_run / "relay.db").read_bytes())
    real = sqlite3.connect
    opened: list[str] = []

    def connect(database: str, **kwargs: object) -> sqlite3.Connection:
        opened.append(database)
        if database.endswith("?mode=ro") and database.startswith(tmp_path.as_uri()):
            raise sqlite3.OperationalError("unable to open database file")  # as on a read-only mount
        return real(database, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(view.sqlite3, "connect", connect)
    monkeypatch.setattr(view.os, "access", lambda path, mode: False)  # the folder is read-only
    conn = view._connect(db)
    assert conn.execute("SELECT count(*) FROM metadata").fetchone()[0] > 0
    conn.close()
    assert opened == [f"{db.as_uri()}?mode=ro&immutable=1"]
    # with a write-ahead log beside it, reading past it would miss what it holds: a copy of both
    (tmp_path / "relay.db-wal").write_bytes(b"\0" * 32)
    conn = view._connect(db)
    assert conn.execute("SELECT count(*) FROM metadata").fetchone()[0] > 0
    assert opened[-1].endswith("?mode=ro") and not opened[-1].startswith(tmp_path.as_uri()), opened
    copy = Path(opened[-1].removeprefix("file://").removesuffix("?mode=ro")).parent
    assert copy.is_dir()
    conn.close()
    assert not copy.exists()  # (the copy goes with the connection)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relay.db", "relay.db-wal"]


def test_disclose_on_a_phone_number_with_no_account_answers_no_such_account(tf_run: Path) -> None:
    """As Signal answered the 2016 grand-jury subpoena for a number it had no account for (the
    built-in signal-subpoena-2016 shows it); a name that is no account is still refused as a slip."""
    res = cli(
        "disclose", "--db", str(tf_run / "relay.db"), "--process", "subpoena", "--target", "+17035550143"
    )
    assert res.returncode == 0, res.stderr
    assert "no such account: no account is registered to `+17035550143`" in res.stdout


def test_a_columns_narrower_than_the_views_take_gets_their_narrowest_layout(
    tf_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--width 10 is refused; COLUMNS=10 laid the view out one character a line, its columns empty."""
    monkeypatch.setenv("COLUMNS", "10")
    res = cli("show", str(tf_run), "--limit", "2")
    assert res.returncode == 0, res.stderr
    assert max(len(line) for line in res.stdout.splitlines()) == 40
    assert "ben/1" in res.stdout


def test_disclose_on_a_database_without_its_provider_file_warns_what_is_lost(
    tmp_path: Path, tf_run: Path
) -> None:
    """Handed only relay.db, a lawyer got "day -5327" dates and "region unknown" without a word."""
    lone = _part_of(tf_run, tmp_path / "lone", "relay.db")
    res = cli(
        "disclose",
        "--db",
        str(lone / "relay.db"),
        "--profile",
        "signal",
        "--process",
        "subpoena",
        "--target",
        "amira",
    )
    assert res.returncode == 0, res.stderr
    assert "warning: no" in res.stderr and "provider.json" in res.stderr and "no region" in res.stderr
    with_file = cli(
        "disclose", "--db", str(tf_run / "relay.db"), "--process", "subpoena", "--target", "amira"
    )
    assert with_file.returncode == 0 and "warning" not in with_file.stderr


def test_bench_and_relay_without_a_word_say_which_words_there_are() -> None:
    """They said "the following arguments are required: what, rest" (the parser's own names)."""
    res = cli("bench")
    assert_clean_error(res, "say which benchmark: crypto, relay, sim, analysis or sweep")
    assert "rest" not in res.stderr
    assert_clean_error(cli("relay"), "say what to do: serve")
    res = cli("bench", "sweep", "--runs", "7")
    assert_clean_error(res, "--runs 7: expected a positive multiple of 5")
    assert "--workers" not in res.stderr.splitlines()[-1]


def test_a_suggested_command_can_be_pasted_when_the_folder_has_a_space(tmp_path: Path) -> None:
    out = tmp_path / "out dir" / "tf"
    assert main(["run", "two-friends", "--out", str(out), "--quiet"]) == 0
    res = cli("run", "two-friends", "--out", str(out), "--quiet", "--force")
    assert f"see it with: relaysim show '{out}'" in res.stdout


def test_an_option_that_only_works_with_another_says_so_when_given_alone(tmp_path: Path) -> None:
    res = cli("run", "two-friends", "--time-scale", "5", "--out", str(tmp_path / "r"), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "relaysim run: warning: --time-scale is for --live" in res.stderr
    res = cli("demo", "--seed", "5", "--out", str(tmp_path / "d"))
    assert res.returncode == 0, res.stderr
    assert "relaysim demo: warning: --seed is for --wire" in res.stderr
    quiet = cli("run", "two-friends", "--out", str(tmp_path / "r2"), "--quiet")
    assert "warning" not in quiet.stderr


@pytest.mark.parametrize("command", ["analyze", "report", "disclose"])
def test_a_run_whose_store_a_newer_relaysim_wrote_is_refused_naming_it(
    tf_run: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """analyze and report read a relay.db of a newer store schema as this one's (the analyses may not
    import relay.store, which knows the version): they refuse it, naming the file and both versions,
    in the words disclose's Store gives, from the one check (relay.store.refuse_a_newer_schema); the
    CLI had its own, in other words ("this relay understands", "upgrade the relay")."""
    import shutil
    import sqlite3

    from relaysim.relay.store import SCHEMA_VERSION

    out = tmp_path / "newer"
    shutil.copytree(tf_run, out)
    con = sqlite3.connect(out / "relay.db")
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    before = (out / "relay.db").read_bytes()
    if command == "disclose":
        argv = [command, "--db", str(out / "relay.db"), "--process", "subpoena", "--target", "amira"]
    else:
        argv = [command, str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    said = (
        f"{out / 'relay.db'}: written by a newer relaysim: schema version {SCHEMA_VERSION + 1} is newer than "
        f"this one reads (up to {SCHEMA_VERSION}); open it with that version, or upgrade relaysim (the file "
        "is left as it is)\n"
    )
    assert err.endswith(said) and err.count("\n") == 1, err
    assert not (out / "analysis").exists() and not (out / "report.html").exists()
    assert (out / "relay.db").read_bytes() == before


@pytest.mark.parametrize("command", ["analyze", "report"])
@pytest.mark.parametrize("older", [1, "last"])
def test_a_run_whose_store_an_older_relaysim_wrote_is_refused_naming_both_versions(
    tf_run: Path, tmp_path: Path, command: str, older: int | str, capsys: pytest.CaptureFixture[str]
) -> None:
    """analyze and report read a relay.db of an older store schema (``PRAGMA user_version`` below this
    relaysim's) as this one's, saying nothing: its tables read as this version's (a table or column a
    later step added read as none, or an SQL error), only a newer one was refused. They read the file
    as it is, never migrating it (a Store would, writing it): it is refused naming the file and both
    versions (relay.store.refuse_another_schema), the file left as it was."""
    import shutil
    import sqlite3

    from relaysim.relay.store import SCHEMA_VERSION

    version = SCHEMA_VERSION - 1 if older == "last" else int(older)
    out = tmp_path / "older"
    shutil.copytree(tf_run, out)
    con = sqlite3.connect(out / "relay.db")
    con.execute(f"PRAGMA user_version = {version}")
    con.commit()
    con.close()
    before = (out / "relay.db").read_bytes()
    assert main([command, str(out)]) == 2
    err = capsys.readouterr().err
    said = (
        f"{out / 'relay.db'}: written by an older relaysim: schema version {version} is older than the one "
        f"this relaysim reads ({SCHEMA_VERSION}), and its tables may differ; read it with the relaysim that "
        "wrote it, or run the scenario again with this one (the file is left as it is)\n"
    )
    assert err.endswith(said) and err.count("\n") == 1, err
    assert not (out / "analysis").exists() and not (out / "report.html").exists()
    assert (out / "relay.db").read_bytes() == before


@pytest.mark.parametrize("command", ["analyze", "report", "disclose"])
def test_a_store_with_the_relay_s_tables_but_no_schema_version_is_refused_by_every_reader(
    tf_run: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A relay.db holding all the relay's tables but ``user_version = 0``: disclose (and relay serve)
    refused it as "a SQLite database, but not a relay store", while analyze and report read it without
    a word. All of them refuse it now, in the Store's words (relay.store.refuse_another_schema)."""
    import sqlite3

    out = tmp_path / "unversioned"
    shutil.copytree(tf_run, out)
    con = sqlite3.connect(out / "relay.db")
    con.execute("PRAGMA user_version = 0")
    con.commit()
    con.close()
    before = (out / "relay.db").read_bytes()
    if command == "disclose":
        argv = [command, "--db", str(out / "relay.db"), "--process", "subpoena", "--target", "amira"]
    else:
        argv = [command, str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{out / 'relay.db'}: " in err and err.count("\n") == 1, err
    assert "a SQLite database, but not a relay store (no schema version, and tables of its own: " in err, err
    # the advice is for a run's reader, not the Store's for relay serve ("give the relay a new file")
    assert err.endswith(
        "; give the relay.db a run wrote (in its --out folder), or run the scenario again (the file is left as "
        "it is)\n"
    ), err
    assert "give the relay a new file" not in err, err
    assert not (out / "analysis").exists() and not (out / "report.html").exists()
    assert (out / "relay.db").read_bytes() == before


def _every_reader_refuses(out: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """What analyze and report (on the run folder ``out``) and disclose (on its relay.db) each say,
    refusing it: exit status 2 and one line each."""
    said = []
    for command in ("analyze", "report", "disclose"):
        if command == "disclose":
            argv = [command, "--db", str(out / "relay.db"), "--process", "subpoena", "--target", "amira"]
        else:
            argv = [command, str(out)]
        assert main(argv) == 2, command
        err = capsys.readouterr().err
        assert err.count("\n") == 1, (command, err)
        said.append(err)
    return said


@pytest.mark.parametrize("content", [b"", "an empty database"])
def test_an_empty_relay_db_is_refused_in_one_wording_by_every_reader(
    tf_run: Path, tmp_path: Path, content: bytes | str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty relay.db (0 bytes, or a SQLite database without a table): analyze and report said
    "cannot read it as a relay store (no such table: metadata)", disclose "not a relaysim relay store
    (it has no accounts or devices or metadata table)". One wording now, after the file's name; and
    disclose's in one sentence ("cannot open it as a relay store: an empty database …, not a relay
    store" said it twice)."""
    import sqlite3

    out = tmp_path / "empty"
    shutil.copytree(tf_run, out)
    (out / "relay.db").write_bytes(b"")
    if content:
        sqlite3.connect(out / "relay.db").execute("PRAGMA page_size = 4096").connection.execute(
            "VACUUM"
        ).connection.close()
    said = set()
    for err in _every_reader_refuses(out, capsys):
        assert f"{out / 'relay.db'}: " in err, err
        said.add(err.split(f"{out / 'relay.db'}: ", 1)[1])
    assert said == {
        "an empty database (no tables, no schema version), not a relay store; give the relay.db a run wrote "
        "(in its --out folder), or run the scenario again (the file is left as it is)\n"
    }, said
    assert not (out / "analysis").exists() and not (out / "report.html").exists()


@pytest.mark.parametrize("tables", [[], ["notes"]])
def test_a_database_of_a_negative_schema_version_is_refused_in_one_wording_by_every_reader(
    tf_run: Path, tmp_path: Path, tables: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A SQLite database whose user_version is below 0 (no relaysim's) passed the store's check:
    disclose refused it with a check of its own (_missing_relay_tables: "not a relaysim relay store
    (it has no accounts or devices or metadata table)"), analyze and report said "cannot read it as
    a relay store (no such table: metadata)". The store's check refuses it, in one wording, and
    disclose's own check is gone."""
    import sqlite3

    out = tmp_path / "negative"
    shutil.copytree(tf_run, out)
    shutil.rmtree(out / "analysis", ignore_errors=True)
    (out / "relay.db").unlink()
    con = sqlite3.connect(out / "relay.db")
    con.execute("PRAGMA user_version = -1")
    for table in tables:
        con.execute(f"CREATE TABLE {table} (x)")
    con.commit()
    con.close()
    said = set()
    for err in _every_reader_refuses(out, capsys):
        said.add(err.split(f"{out / 'relay.db'}: ", 1)[-1])
    from relaysim.relay.store import SCHEMA_VERSION

    assert said == {
        f"a SQLite database, but not a relay store (schema version -1: a relay store's is from 1 to "
        f"{SCHEMA_VERSION}); give the relay.db a run wrote (in its --out folder), or run the scenario again "
        "(the file is left as it is)\n"
    }, said
    assert not (out / "analysis").exists() and not (out / "report.html").exists()


@pytest.mark.parametrize("tables", [["metadata"], ["accounts", "devices"]])
def test_a_store_with_only_some_of_the_relay_s_tables_is_refused_in_one_wording_by_every_reader(
    tf_run: Path, tmp_path: Path, tables: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A relay.db of this schema version with some of the relay's tables dropped: disclose said "has
    no accounts or devices or metadata table" (whichever were gone), analyze and report "no such
    table: metadata" (or read on without one). One wording now, naming the tables missing."""
    import sqlite3

    from relaysim.relay.store import SCHEMA_VERSION

    out = tmp_path / "some"
    shutil.copytree(tf_run, out)
    shutil.rmtree(out / "analysis", ignore_errors=True)
    con = sqlite3.connect(out / "relay.db")
    for table in tables:
        con.execute(f"DROP TABLE {table}")
    con.commit()
    con.close()
    named = " and ".join(tables)
    expected = (
        f"{out / 'relay.db'}: a relay store of schema version {SCHEMA_VERSION} without its {named} "
        f"table{'s' if len(tables) > 1 else ''}: damaged or changed by hand; give the relay.db a run wrote "
        "(in its --out folder), or run the scenario again (the file is left as it is)\n"
    )
    for err in _every_reader_refuses(out, capsys):
        assert err.endswith(expected), err
    assert not (out / "analysis").exists() and not (out / "report.html").exists()


def test_a_relay_db_that_is_no_sqlite_database_is_refused_in_one_wording_by_every_reader(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A relay.db that is a text file: analyze and report said sqlite3's words, "cannot read it as a
    relay store (file is not a database)", disclose "cannot open it as a relay store: file is not a
    database". One wording now, the Store's for such a file, after the file's name and with a run's
    reader's advice; one the command does not read (in a subfolder) is warned of, as a store of
    another schema there is."""
    out = tmp_path / "text"
    shutil.copytree(tf_run, out)
    shutil.rmtree(out / "analysis", ignore_errors=True)
    (out / "relay.db").write_text("not a database\n" * 100, encoding="utf-8")
    said = {err.split(f"{out / 'relay.db'}: ", 1)[-1] for err in _every_reader_refuses(out, capsys)}
    assert said == {
        "not a SQLite database (its first bytes are not SQLite's header), not a relay store; give the "
        "relay.db a run wrote (in its --out folder), or run the scenario again (the file is left as it is)\n"
    }, said
    assert not (out / "analysis").exists() and not (out / "report.html").exists()
    # a copy in a subfolder, which analyze and report do not read: a warning naming it
    shutil.rmtree(out)
    shutil.copytree(tf_run, out)
    (out / "old").mkdir()
    (out / "old" / "relay.db").write_text("not a database\n", encoding="utf-8")
    for command in ("analyze", "report"):
        assert main([command, str(out)]) == 0, command
        err = capsys.readouterr().err
        assert (
            f"relaysim {command}: warning: {out / 'old' / 'relay.db'}: not a SQLite database (its first "
            f"bytes are not SQLite's header), not a relay store ({command} does not read it)\n"
        ) == err, err


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("[1]", "expected a JSON object, got list"),
        ('"keep-everything"', "expected a JSON object, got str"),
        ("{}", "profile: expected the name of the relay profile the run used, got nothing"),
        ('{"x": 1}', "profile: expected the name of the relay profile the run used, got nothing"),
        ('{"profile": 5}', "profile: expected a relay profile's name, got 5"),
        (
            '{"profile": "signal", "clock_epoch": "soon"}',
            "clock_epoch: expected Unix seconds (a number), got 'soon'",
        ),
        ('{"profile": "signal", "run_ended": "x"}', "run_ended: expected Unix seconds (a number), got 'x'"),
        (
            '{"profile": "signal", "profile_as_of": 5}',
            "profile_as_of: expected a date like 2016-05-01, got 5",
        ),
        ('{"profile": "signal", "geoip": [1]}', "geoip: expected an object of address → region, got [1]"),
        (
            '{"profile": "signal", "geoip": {"a": 5}}',
            "geoip: expected an object of address → region, got {'a': 5}",
        ),
        ('{"profile": "signal", "content_keys": 5}', "content_keys: expected a list of keys, got 5"),
        (
            '{"profile": "signal", "content_keys": [{"key_id": "k"}]}',
            "content_keys: expected keys as relaysim",
        ),
    ],
)
def test_a_provider_json_of_the_wrong_shape_is_refused_in_one_wording_by_every_reader(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, said: str
) -> None:
    """provider.json as relaysim run writes it names the relay profile, the clock, the keys and the
    GeoIP table (sims.report._provider_file). One that was not an object was "expected an object with
    'profile' and 'geoip'" to report and "expected a JSON object, got list" to analyze; one without
    a profile ({"x": 1}) was read by all three as a run with no profile (the records as recorded,
    an undated calendar), exit 0; a GeoIP region, a key, run_ended or profile_as_of of the wrong type
    was refused by disclose alone, and read by analyze and report (a profile_as_of of 5: a dated run).
    Every reader refuses each now, naming the file and the field, in the same words
    (sims.analysis.runfiles.provider_problem), and the command that writes it (disclose named none)."""
    out = tmp_path / "provider"
    shutil.copytree(tf_run, out)
    shutil.rmtree(out / "analysis", ignore_errors=True)
    (out / "provider.json").write_text(content, encoding="utf-8")
    for err in _every_reader_refuses(out, capsys):
        assert f"{out / 'provider.json'}: {said}" in err, err
        # and the command that writes it (disclose: or --profile, with the file moved aside)
        assert f"run it again with: relaysim run two-friends --out {out} --force" in err, err
    assert not (out / "analysis").exists() and not (out / "report.html").exists()


def test_a_provider_json_naming_no_known_profile_is_said_alike_by_analyze_and_disclose(
    tf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """analyze said "provider.json: profile: unknown relay profile 'nope'", disclose the same without the
    field's name and without the command that writes the file."""
    out = tmp_path / "nope"
    shutil.copytree(tf_run, out)
    shutil.rmtree(out / "analysis", ignore_errors=True)
    provider = json.loads((out / "provider.json").read_text(encoding="utf-8"))
    (out / "provider.json").write_text(json.dumps({**provider, "profile": "nope"}), encoding="utf-8")
    said = f"{out / 'provider.json'}: profile: unknown relay profile 'nope'"
    assert main(["analyze", str(out)]) == 2
    assert said in capsys.readouterr().err
    argv = ["disclose", "--db", str(out / "relay.db"), "--process", "subpoena", "--target", "amira"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and f"run it again with: relaysim run two-friends --out {out} --force" in err, err


@pytest.mark.parametrize(
    "where", ["counterfactual", "counterfactual/signal", "signal/counterfactual/signal", "old copy"]
)
@pytest.mark.parametrize("command", ["analyze", "report"])
def test_a_relay_db_of_another_schema_the_command_does_not_read_is_warned_of_not_refused(
    tf_run: Path, tmp_path: Path, where: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """cli._newer_store checked DIR/relay.db and DIR/*/relay.db only: a relay.db of another schema in
    DIR/counterfactual/PROFILE/ went unchecked. Then every relay.db at any depth was checked, and
    one of another schema refused the whole command, even one it does not read (a copy the user
    left in a subfolder): it is a warning naming the file, the command goes on; the run's own
    relay.db, which it reads, is refused."""
    import sqlite3

    from relaysim.relay.store import SCHEMA_VERSION

    out = tmp_path / "nested"
    shutil.copytree(tf_run, out)
    inner = out / where
    inner.mkdir(parents=True)
    shutil.copyfile(tf_run / "relay.db", inner / "relay.db")
    con = sqlite3.connect(inner / "relay.db")
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    assert main([command, str(out)]) == 0
    err = capsys.readouterr().err
    said = f"relaysim {command}: warning: {inner / 'relay.db'}: written by a newer relaysim: schema version {SCHEMA_VERSION + 1}"
    assert said in err and err.rstrip().endswith(f"({command} does not read it)"), err
    # a warning says what the file is and that it is not read: no advice of what to give or do
    warning = next(line for line in err.splitlines() if "warning:" in line)
    assert warning.endswith(f"(up to {SCHEMA_VERSION}) ({command} does not read it)"), warning
    # the store it reads: refused, naming it
    shutil.rmtree(out / "analysis", ignore_errors=True)
    (out / "report.html").unlink(missing_ok=True)
    shutil.copyfile(inner / "relay.db", out / "relay.db")
    assert main([command, str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"relaysim {command}: {out / 'relay.db'}: written by a newer relaysim"), err
    assert not (out / "analysis").exists() and not (out / "report.html").exists()


def test_report_refuses_a_comparisons_profile_store_of_another_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A comparison's page of each profile is computed from that profile's relay.db (no analysis/
    there): report reads it, and refuses it when another relaysim wrote it."""
    import sqlite3

    from relaysim.relay.store import SCHEMA_VERSION

    out = tmp_path / "cmp"
    assert main(["run", "pakistan-2015", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    con = sqlite3.connect(out / "bes" / "relay.db")
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"relaysim report: {out / 'bes' / 'relay.db'}: written by a newer relaysim"), err
    assert not (out / "report.html").exists()


def test_disclose_names_profile_when_the_provider_it_names_did_not_exist_on_the_run_s_day(
    tf_run: Path, tmp_path: Path
) -> None:
    """A dated run (provider.json's profile_as_of) read with ``--profile`` naming a provider that did not
    exist yet that day: the choice is the option's, so the error names ``--profile``, not the file (which
    it blamed); without the option, the file's recorded profile is the one refused, and the file named."""
    run = tmp_path / "run"
    shutil.copytree(tf_run, run)
    provider = json.loads((run / "provider.json").read_text(encoding="utf-8"))
    provider["profile_as_of"] = "2010-06-01"  # before Signal's first day (relay.profiles.SIGNAL.since)
    argv = ("disclose", "--db", str(run / "relay.db"), "--process", "subpoena", "--target", "ben")
    provider["profile"] = "keep-everything"  # (no first day): only --profile's choice is refused
    (run / "provider.json").write_text(json.dumps(provider), encoding="utf-8")
    res = cli(*argv, "--profile", "signal")
    assert_clean_error(res, "--profile 'signal'", "did not exist on 2010-06-01", "provider.json")
    assert not res.stderr.startswith(str(run / "provider.json")), res.stderr
    provider["profile"] = "signal"
    (run / "provider.json").write_text(json.dumps(provider), encoding="utf-8")
    res = cli(*argv)
    assert_clean_error(res, "provider.json: ", "did not exist on 2010-06-01")
    assert "--profile" not in res.stderr, res.stderr


def test_a_byte_of_an_argument_not_in_the_locales_encoding_is_named_as_the_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``relaysim show $'\\xff'``: Python holds the byte as a lone surrogate (surrogateescape), and
    stderr wrote it as "\\udcff", no byte the user typed; it is said as "\\xff"."""
    from relaysim.sims.analysis.runfiles import one_line

    assert one_line("a\udcffb\udc80") == "a\\xffb\\x80"
    assert one_line("\x1b[31m\u202e") == "\\x1b[31m\\u202e"  # (as before)
    monkeypatch.chdir(tmp_path)
    assert main(["show", "run-\udcff"]) == 2
    err = capsys.readouterr().err
    assert "run-\\xff has no transcript.jsonl" in err and "\udcff" not in err, err


@pytest.mark.parametrize("command", ["sweep", "reproduce", "defences"])
@pytest.mark.parametrize(
    ("scenario", "key", "profiles"),
    [
        ("fbi-chart", "scenario.matrix", "(matrix = true: every real profile, signal, whatsapp, "),
        ("pakistan-2015", "scenario.compare_profiles", "(compare_profiles, bes, bbm-consumer)"),
    ],
)
def test_a_scenario_of_several_profiles_is_refused_alike_by_the_commands_of_one_relay(
    command: str, scenario: str, key: str, profiles: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sweep and reproduce ran fbi-chart (matrix) and pakistan-2015 (compare_profiles) under their
    [relay] profile alone, unsaid; defences refused them without naming the profiles. All three
    refuse them before anything runs, naming the profiles and the way out."""
    out = tmp_path / "out"
    argv = [command, scenario] + ([] if command == "reproduce" else ["--out", str(out)])
    assert main(argv) == 2
    err = capsys.readouterr().err
    named = f"{scenario}.toml" if command == "sweep" else scenario  # (sweep names the file, as its errors do)
    assert err.startswith(
        f"relaysim {command}: {named}: {key}: this scenario runs under several relay profiles {profiles}"
    ), err
    assert (
        f"and relaysim {command} runs one relay under one profile; give it a scenario with one [relay] profile"
        in err
    )
    assert err.rstrip().endswith(f"or run every profile with relaysim run {scenario}"), err
    if command == "sweep":  # and the way out it gives is one
        from relaysim.sims.sweep import _scenario_text, build_scenario, parse_param

        way = err.split("or sweep it one profile at a time: ")[1].split(", or run")[0].split(" (")[0]
        params = [parse_param(p) for p in way.replace("--param ", "").split(" ")]
        assert params[0][0] == key and params[1][0] == "relay.profile", way
        text, source = _scenario_text(scenario)
        one = build_scenario(
            text, source, [(params[0][0], params[0][1][0]), ("relay.profile", params[1][1][0])]
        )
        assert not (one.matrix or one.compare_profiles) and one.relay.profile == params[1][1][0]
    assert not out.exists()


def _several_profile_builtins() -> list[str]:
    from relaysim.sims.scenario import builtin_scenarios, resolve_scenario

    return [
        n for n in builtin_scenarios() if resolve_scenario(n).matrix or resolve_scenario(n).compare_profiles
    ]


@pytest.mark.parametrize("scenario", _several_profile_builtins())
def test_sweeps_way_out_of_a_scenario_of_several_profiles_works_for_every_profile_it_names(
    scenario: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``relaysim sweep pakistan-2015`` said to sweep it with ``--param scenario.compare_profiles=[]
    --param relay.profile=bes,bbm-consumer``, which was refused: the PTA demand (events[0].profiles =
    ["bes"]) is served on BES alone, and a scenario run under bbm-consumer alone cannot serve it. The
    way out names the profiles every order is served under (scenario.lone_profiles), says why any is
    left out, and, given as it is, sweeps every cell: checked here for each built-in scenario of
    several profiles, up to the first run (which is not made), as the copy it suggests."""
    import re

    from relaysim.sims import sweep
    from relaysim.sims.scenario import resolve_scenario

    assert {"fbi-chart", "pakistan-2015", "india-2010"} <= set(_several_profile_builtins())
    out = tmp_path / "out"
    assert main(["sweep", scenario, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    way = err.split("or sweep it one profile at a time: ")[1]
    way = re.split(r" \(|, or run", way)[0]
    params = [sweep.parse_param(p) for p in way.replace("--param ", "").split(" ")]
    assert [k for k, _v in params] == [
        "scenario.matrix" if resolve_scenario(scenario).matrix else "scenario.compare_profiles",
        "relay.profile",
    ], way
    named = params[1][1]
    every = resolve_scenario(scenario).compare_profiles or named
    for profile in every:  # (each one left out is said to be, and why)
        assert profile in named or f"not {profile}" in err.split(way)[1].split(", or run")[0], (profile, err)
    if scenario == "pakistan-2015":
        assert named == ["bes"] and "the order pta-blanket-demand is served under bes alone" in err, err
    copy = re.search(r'with profile = "([^"]+)" under \[relay\]', err)
    assert copy is not None and copy[1] in named, err

    class Checked(Exception):
        pass

    def no_runs(_workers: int) -> object:  # (every cell was checked before this: the sweep would run)
        raise Checked

    monkeypatch.setattr(sweep, "_pool_executor", no_runs)
    with pytest.raises(Checked):
        sweep.run_sweep(scenario, params, 1, out, workers=1)


@pytest.mark.parametrize("command", ["analyze", "report"])
def test_a_defences_folder_is_named_as_one_run_per_variant(
    tf_run: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """analyze and report of relaysim defences' DIR (defences.json, a run per variant in folders of
    its own): analyze said it "holds one run per profile", report that it "holds no finished run" and
    to make one there. Both name a variant's folder to give instead."""
    out = tmp_path / "defences-tf"
    out.mkdir()
    (out / "defences.json").write_text("{}\n", encoding="utf-8")
    shutil.copytree(tf_run, out / "as-written")
    assert main([command, str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out / "as-written") in err and "variant" in err and "profile" not in err, err
    assert "make one with" not in err and err.count("\n") == 1, err


def _suggested(err: str) -> list[str]:
    """The command an error says to make the run with, as words (after relaysim)."""
    import shlex

    assert "make one with: relaysim run " in err, err
    return shlex.split(err.split("make one with: relaysim ", 1)[1].strip())


@pytest.mark.parametrize("command", ["show", "analyze", "report"])
def test_a_missing_profile_folder_of_a_comparison_suggests_running_the_comparison(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """``relaysim show out/pakistan-2015/bes`` with no such folder said to make one with ``relaysim run
    NAME --out out/pakistan-2015/bes``: a run of its own in a comparison's profile subfolder. It says
    to run the comparison into the parent, which makes the folder asked for; and the same once the
    parent holds the comparison (with --force)."""
    monkeypatch.chdir(tmp_path)
    asked = Path("out", "pakistan-2015", "bes")
    assert main([command, str(asked)]) == 2
    argv = _suggested(capsys.readouterr().err)
    assert argv == ["run", "pakistan-2015", "--out", str(asked.parent)], argv
    assert main([*argv, "--quiet"]) == 0
    assert (asked / "transcript.jsonl").is_file() and (asked / "relay.db").is_file()
    capsys.readouterr()
    shutil.rmtree(asked)  # the profile's run gone from the comparison's folder
    assert main([command, str(asked)]) == 2
    argv = _suggested(capsys.readouterr().err)
    assert argv == ["run", "pakistan-2015", "--out", str(asked.parent), "--force"], argv
    assert main([*argv, "--quiet"]) == 0
    assert (asked / "transcript.jsonl").is_file()


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        ("out/two-friends", ["run", "two-friends", "--out", "out/two-friends"]),
        ("runs/mine", ["run", "NAME", "--out", "runs/mine"]),
        ("runs/bes", ["run", "NAME", "--out", "runs/bes"]),  # (runs is no scenario comparing bes)
    ],
)
def test_a_missing_run_folder_suggests_a_run_that_makes_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    asked: str,
    expected: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["show", asked]) == 2
    assert _suggested(capsys.readouterr().err) == expected


def _advised(err: str, words: str) -> list[str]:
    """The command an error says to run after ``words`` (``run it again with:``), as words."""
    import shlex

    assert f"{words} relaysim run " in err, err
    return shlex.split(err.split(f"{words} relaysim ", 1)[1].split("   (", 1)[0].strip())


def _a_comparison(parent: Path, tf_run: Path, profiles: tuple[str, ...] = ("bes", "bbm-consumer")) -> None:
    """``parent`` as pakistan-2015's comparison folder: its summary.json, and a run per profile."""
    parent.mkdir(parents=True)
    summary = {
        "scenario": "pakistan-2015",
        "compare_profiles": list(profiles),
        "profiles": {p: {} for p in profiles},
    }
    (parent / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    for p in profiles:
        shutil.copytree(tf_run, parent / p)


def test_run_it_again_names_the_scenario_the_folder_holds(
    tf_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An error or warning about a run's files said to run it again with ``relaysim run NAME --out DIR
    --force``, though summary.json names the scenario: it says ``relaysim run two-friends``."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tf_run, "mine")
    transcript = Path("mine", "transcript.jsonl")
    whole = transcript.read_bytes()
    transcript.write_bytes(whole + b'{"t": 1, "kind\n')  # (a line cut short: read_run's _event)
    assert main(["show", "mine"]) == 2
    assert _advised(capsys.readouterr().err, "run it again with:") == [
        "run",
        "two-friends",
        "--out",
        "mine",
        "--force",
    ]
    transcript.write_bytes(b"")  # (emptied: run_disagreements' warning)
    main(["show", "mine"])
    err = capsys.readouterr().err
    assert "is empty (0 bytes)" in err, err
    assert _advised(err, "run it again with:") == ["run", "two-friends", "--out", "mine", "--force"]


@pytest.mark.parametrize("made", ["own file", "seed", "built-in"])
def test_run_it_again_remakes_the_run_the_folder_holds_its_file_and_its_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], made: str
) -> None:
    """The command advised to make a run again trusted summary.json's ``scenario`` whenever it was a
    built-in's name: a run of a file of the user's own named two-friends was to be made again with
    ``relaysim run two-friends``, the built-in; and it dropped the ``--seed`` the run was made with.
    The run records whether it was the built-in (summary.json's ``scenario_from``), and the seed is given
    where it is not the built-in's own."""
    from relaysim.sims.scenario import builtin_scenarios, load_scenario

    monkeypatch.chdir(tmp_path)
    builtin = builtin_scenarios()["two-friends"]
    own_seed = load_scenario(builtin).seed
    if made == "own file":  # (its own words in a message: not the built-in's run)
        text = builtin.read_text(encoding="utf-8")
        assert "Page 4" in text
        Path("two-friends.toml").write_text(text.replace("Page 4", "Page 5"), encoding="utf-8")
        argv, again = ["two-friends.toml"], ["NAME", "--seed", str(own_seed)]
    elif made == "seed":
        argv, again = (
            ["two-friends", "--seed", str(own_seed + 1)],
            ["two-friends", "--seed", str(own_seed + 1)],
        )
    else:
        argv, again = ["two-friends"], ["two-friends"]
    assert main(["run", *argv, "--out", "mine", "--quiet"]) == 0
    capsys.readouterr()
    transcript = Path("mine", "transcript.jsonl")
    transcript.write_bytes(transcript.read_bytes() + b'{"t": 1, "kind\n')  # (a line cut short)
    assert main(["show", "mine"]) == 2
    assert _advised(capsys.readouterr().err, "run it again with:") == [
        "run",
        *again,
        "--out",
        "mine",
        "--force",
    ]


def test_run_it_again_of_a_comparisons_profile_runs_the_comparison(
    tf_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A damaged run in a comparison's profile folder was to be run again with ``relaysim run NAME
    --out pk/bes --force``: a run of its own there. show, report and the report's own check of
    summary.json say to run the comparison again."""
    from relaysim.sims.reports.html import ReportError, render_report

    monkeypatch.chdir(tmp_path)
    _a_comparison(Path("pk"), tf_run)
    transcript = Path("pk", "bes", "transcript.jsonl")
    transcript.write_bytes(transcript.read_bytes() + b'{"t": 1, "kind\n')  # (a line cut short)
    again = ["run", "pakistan-2015", "--out", "pk", "--force"]
    for argv in (["show", "pk/bes"], ["report", "pk/bes"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert _advised(err, "run it again with:") == again, (argv, err)
    summary = Path("pk", "bes", "summary.json")
    summary.unlink()
    summary.symlink_to("summary.json")  # (a loop: the CLI says so first; render_report alone)
    with pytest.raises(ReportError) as exc:
        render_report(summary.parent)
    assert _advised(str(exc.value), "run it again with:") == again, exc.value


@pytest.mark.parametrize("comparison", [True, False])
def test_a_profile_folder_the_comparison_does_not_run_is_suggested_beside_it(
    tf_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    comparison: bool,
) -> None:
    """``relaysim show out/pakistan-2015/signal`` (pakistan-2015 compares bes and bbm-consumer) said to
    make it with ``relaysim run NAME --out out/pakistan-2015/signal``: a run nested in the
    comparison's folder, which the next ``relaysim run pakistan-2015 --out out/pakistan-2015 --force``
    removes. It suggests a folder beside the comparison's, saying why."""
    monkeypatch.chdir(tmp_path)
    parent = Path("out", "pakistan-2015")
    if comparison:
        _a_comparison(parent, tf_run)
    asked = parent / "signal"
    assert main(["show", str(asked)]) == 2
    err = capsys.readouterr().err
    beside = str(Path("out", "pakistan-2015-signal"))
    assert _suggested(err.split("   (", 1)[0]) == ["run", "NAME", "--out", beside], err
    assert "not under signal" in err and "removed by the next run there with --force" in err, err
    if comparison:  # (what it warns of: a run of its own there goes with the comparison's --force)
        shutil.copytree(tf_run, asked)
        assert main(["run", "pakistan-2015", "--out", str(parent), "--force", "--quiet"]) == 0
        assert not asked.exists()


def test_disclose_refuses_every_process_served_on_another_custodian(
    tf_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """disclose refused the warrant on the backup's custodian by its name alone: any other process of
    NOT_ON_THE_RELAY reached the relay's desk, whose ValueError is no clear line saying why the relay has nothing to
    answer it with."""
    from relaysim.relay import profiles

    monkeypatch.setattr(profiles, "NOT_ON_THE_RELAY", profiles.NOT_ON_THE_RELAY | {"subpoena"})
    db = tf_run / "relay.db"
    before = db.read_bytes()
    assert main(["disclose", "--db", str(db), "--process", "subpoena", "--target", "amira"]) == 2
    cap = capsys.readouterr()
    assert not cap.out, cap.out
    assert cap.err.count("\n") == 1 and "Traceback" not in cap.err, cap.err
    assert "--process subpoena: a subpoena is served on another custodian" in cap.err, cap.err
    assert "not on the relay's operator" in cap.err and "the relay has nothing to answer it with" in cap.err
    assert db.read_bytes() == before
    # the warrant on the backup's custodian keeps its own word, where it is served and how to serve it
    assert main(["disclose", "--db", str(db), "--process", "backup_warrant", "--target", "amira"]) == 2
    assert "served on the custodian of the target's device backups" in capsys.readouterr().err
