"""The operator's socket (relay/admin.py): orders are taken as written or refused with the field named,
no line can stop the relay, and the socket's path never costs anyone a file."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from relaysim.relay.admin import AdminPathError, _session, apply, prepare_admin_path, serve_admin
from relaysim.relay.server import main as relay_main
from tests.helpers import new_core

T = 1_700_000_000.0


def _tap(**fields: Any) -> dict[str, Any]:
    return {"op": "add_tap", "id": "t1", "target": "alice", "start": T, "end": T + 60, **fields}


@pytest.mark.parametrize(
    ("command", "says"),
    [
        # a pen register asked for with "false" as a string was installed as a content wiretap
        (_tap(content="false"), "content: expected true or false"),
        (_tap(target={"a": 1}), "target: expected a non-empty string"),
        (_tap(id=None), "id: expected a non-empty string"),
        (_tap(start=True), "start: expected a time in Unix seconds"),
        # an integer past a float's range stopped the whole relay (OverflowError)
        (_tap(end=int("9" * 400)), "end: 99999999999999999999… is no time"),
        (_tap(extra=1), "extra: not a field of add_tap"),
        ({"op": "preserve", "account": None, "since": T}, "account: expected a non-empty string"),
        ({"op": "preserve", "account": "bob", "since": int("1" * 400)}, "since:"),
        ({"op": "preserve", "account": "bob"}, "since: missing"),
        ({"op": "explode"}, "op: expected 'add_tap', 'remove_tap' or 'preserve'"),
        (["add_tap"], "expected a JSON object"),
        # a long value was shown by the first 60 characters of its JSON, a string's closing quote lost
        ({"op": "x" * 500}, 'got "' + "x" * 58 + '"… (500 characters)'),
        ({"op": "\n" * 100}, 'got "' + "\\n" * 29 + '"… (100 characters)'),
        (
            _tap(id=["y" * 500]),
            'id: expected a non-empty string, got ["' + "y" * 58 + "… (504 characters of JSON)",
        ),
        # a field not of the command: by its name, or quoted when it reads as none (it was shown whole)
        (_tap(**{"z" * 500: 1}), '"' + "z" * 58 + '"… (500 characters): not a field of add_tap'),
        (_tap(**{"a\nb": 1}), '"a\\nb": not a field of add_tap'),
    ],
)
def test_a_command_is_taken_as_written_or_refused_with_its_field(command: object, says: str) -> None:
    core = new_core()
    answer = apply(core, command)
    assert answer["ok"] is False and says in answer["error"], answer
    assert not core.taps and not core.preservations


def test_a_well_formed_order_is_carried_out() -> None:
    core = new_core()
    assert apply(core, _tap(content=False)) == {"ok": True}
    assert core.taps["t1"].content is False and core.taps["t1"].target == "alice"
    assert apply(core, {"op": "preserve", "account": "bob", "since": T}) == {"ok": True}
    assert core.preservations["bob"] == (T,)
    assert apply(core, {"op": "remove_tap", "id": "t1"}) == {"ok": True} and not core.taps


async def test_a_line_nested_past_the_parsers_depth_is_answered_not_fatal() -> None:
    core = new_core()
    ours, theirs = trio.testing.memory_stream_pair()

    async def call(fn: Any) -> dict[str, Any]:
        return fn()  # type: ignore[no-any-return]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_session, core, theirs, call)
        await ours.send_all(b"[" * 30000 + b"]" * 30000 + b"\n" + json.dumps(_tap()).encode() + b"\n")
        got = b""
        while got.count(b"\n") < 2:
            got += await ours.receive_some(65536)
        first, second = (json.loads(line) for line in got.splitlines())
        assert first == {"ok": False, "error": "not JSON: nested too deeply"}
        assert second == {"ok": True}  # the session goes on
        await ours.aclose()


def test_a_file_at_the_admin_path_is_refused_and_kept(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("the operator's notes\n", encoding="utf-8")
    with pytest.raises(AdminPathError, match="not a socket"):
        prepare_admin_path(str(notes))
    assert notes.read_text(encoding="utf-8") == "the operator's notes\n"
    # relay serve says so before it starts, and its own database is never taken for the socket
    db = tmp_path / "relay.db"
    assert relay_main(["--db", str(db), "--admin", str(notes)]) == 2
    assert relay_main(["--db", str(db), "--admin", str(db)]) == 2
    assert notes.exists()


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal"])
def test_the_admin_socket_is_never_a_file_of_a_linked_database(
    tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--db LINK to TARGET: SQLite keeps TARGET-wal and TARGET-shm (it resolves the link), and
    --admin TARGET-wal was taken (only LINK-wal was compared); -journal was not compared at all."""
    from relaysim.relay import admin

    def started(path: str) -> None:
        raise AdminPathError(f"--admin {path}: taken")  # (the relay would start: stop it here)

    monkeypatch.setattr(admin, "prepare_admin_path", started)
    target = tmp_path / "data" / "relay.db"
    target.parent.mkdir()
    link = tmp_path / "link.db"
    link.symlink_to(target)
    # (and --db TARGET, --admin LINK: the database itself; LINK-wal is a path of its own then)
    for db, socket_path in ((link, f"{target}{suffix}"), (target, f"{link}{suffix}"))[
        : 2 if not suffix else 1
    ]:
        assert relay_main(["--port", "0", "--db", str(db), "--admin", socket_path]) == 2
        err = capsys.readouterr().err
        assert f"--admin {socket_path} is the database's own file" in err, err
    # a path of its own beside them is taken
    assert relay_main(["--port", "0", "--db", str(link), "--admin", f"{target}.sock"]) == 2
    assert f"--admin {target}.sock: taken" in capsys.readouterr().err
    assert not target.exists()


def test_an_admin_path_no_socket_can_be_made_at_is_refused_before_the_relay_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--admin in a folder that is not there, or longer than a Unix socket's path can be: the relay
    started, logged its set-up, and stopped with "cannot serve: [Errno 2] No such file or directory"
    or "AF_UNIX path too long" (exit 1), naming neither --admin nor the path; a folder there was
    "a file ... that is not a socket"."""
    from relaysim.relay.admin import MAX_SOCKET_PATH

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "relay.db"
    folder = tmp_path / "afolder"
    folder.mkdir()
    long = "s" * (MAX_SOCKET_PATH + 1)
    for path, said in (
        ("missing/admin.sock", "--admin missing/admin.sock: its folder missing does not exist"),
        (long, f"--admin {long}: {MAX_SOCKET_PATH + 1} bytes long; a Unix socket's path is at most"),
        (str(folder), f"--admin {folder}: a folder is there; give another path"),
    ):
        assert relay_main(["--port", "0", "--db", str(db), "--admin", path]) == 2
        err = capsys.readouterr().err
        assert said in err and "cannot serve" not in err, err
    assert not db.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afolder"]


def test_a_stale_socket_is_cleared_and_a_listening_one_is_left_alone(tmp_path: Path) -> None:
    path = str(tmp_path / "admin.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # a relay that stopped without removing its socket
    prepare_admin_path(path)
    assert not Path(path).exists()
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(path)
    live.listen()
    try:
        with pytest.raises(AdminPathError, match="another relay is listening"):
            prepare_admin_path(path)
        assert Path(path).exists()
    finally:
        live.close()


async def test_on_stopping_the_relay_removes_only_the_socket_it_made(tmp_path: Path) -> None:
    path = tmp_path / "admin.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_admin, new_core(), str(path))
        path.unlink()
        path.write_text("put here while the relay ran\n", encoding="utf-8")
        nursery.cancel_scope.cancel()
    assert path.read_text(encoding="utf-8") == "put here while the relay ran\n"
