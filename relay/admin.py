"""The operator's socket: orders served on a running relay (``relaysim relay serve --admin PATH``).

Legal process reaches a provider through its staff, not through the protocol: nothing a device
can send installs a tap or freezes an account. A relay started with ``--admin PATH`` listens on a
Unix socket at ``PATH`` (created mode 0600: only the operator's own user can connect) for one
JSON object per line, and answers each with one line:

    {"op": "add_tap", "id": "pen-register-amira", "target": "amira", "start": 1.7e9, "end": 1.7e9, "content": false}
    {"op": "remove_tap", "id": "pen-register-amira"}
    {"op": "preserve", "account": "amira", "since": 1.7e9}

→ ``{"ok": true}`` or ``{"ok": false, "error": "..."}``. Times are the relay's clock (Unix
seconds). Each is the ``relay.core.RelayCore`` method of that name, so taps and preservations
are written to the store as when served in-process. Disclosures are not answered here: the
compliance desk (``relay.compliance``) reads the relay's database, which WAL lets it do while
the relay runs (``sims.live``), or after it has stopped (``relaysim disclose``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import stat
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio  # type: ignore[import-untyped,unused-ignore]

from relaysim.relay.core import RelayCore, Tap
from relaysim.relay.wire import MAX_QUOTED

__all__ = ["MAX_LINE", "AdminPathError", "apply", "prepare_admin_path", "serve_admin"]

log = logging.getLogger("relay.admin")
MAX_LINE = 64 * 1024


class _Refused(ValueError):
    """A command that names a field wrongly: its answer says which field and what was expected."""


_OPS = ("add_tap", "remove_tap", "preserve")
_FIELDS: dict[str, frozenset[str]] = {
    "add_tap": frozenset({"op", "id", "target", "start", "end", "content"}),
    "remove_tap": frozenset({"op", "id"}),
    "preserve": frozenset({"op", "account", "since"}),
}


# The most characters of a value an answer quotes: what relay.wire.quoted quotes of a peer's key or kind.
MAX_SHOWN = MAX_QUOTED


def _shown(value: object) -> str:
    """``value`` (from the operator's line) as an answer quotes it, as JSON: whole when that is at most
    MAX_SHOWN characters; else a str by a closed quote of its first characters, "…" and its length
    (``"xxx…x"… (500 characters)``), anything else by its first characters, "…" and the length of its
    JSON (the first 60 characters of the JSON were shown, a str's closing quote lost)."""
    shown = json.dumps(value)
    if len(shown) <= MAX_SHOWN:
        return shown
    if type(value) is str:
        head = value[: MAX_SHOWN - 2]
        while len(json.dumps(head)) > MAX_SHOWN:  # (escapes: "\n", "\u0000")
            head = head[:-1]
        return f"{json.dumps(head)}… ({len(value):,} characters)"
    return f"{shown[:MAX_SHOWN]}… ({len(shown):,} characters of JSON)"


def _text(command: dict[str, Any], key: str, *, optional: bool = False) -> str | None:
    """``command[key]``, a non-empty string (absent or null: None, where ``optional``)."""
    value = command.get(key)
    if value is None and optional:
        return None
    if key not in command:
        raise _Refused(f"{key}: missing")
    if type(value) is not str or not value:
        raise _Refused(f"{key}: expected a non-empty string, got {_shown(value)}")
    return value


def _name(command: dict[str, Any], key: str) -> str:
    value = _text(command, key)
    assert value is not None
    return value


def _time(command: dict[str, Any], key: str) -> float:
    if key not in command:
        raise _Refused(f"{key}: missing")
    value = command[key]
    if type(value) not in (int, float):  # (bool is not a time)
        raise _Refused(f"{key}: expected a time in Unix seconds (a number), got {_shown(value)}")
    try:
        seconds = float(value)
    except OverflowError:
        raise _Refused(f"{key}: {str(value)[:20]}… is no time the relay's clock reaches") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise _Refused(f"{key}: expected a time in Unix seconds, got {value}")
    return seconds


def apply(core: RelayCore, command: object) -> dict[str, Any]:
    """Carry out one operator command on ``core``; the answer to send back. Every field must be of
    its own type: nothing is converted (``"content": "false"`` is refused, not read as true)."""
    try:
        if not isinstance(command, dict):
            raise _Refused(f"expected a JSON object, got {type(command).__name__}")
        op = command.get("op")
        if op not in _OPS:
            raise _Refused(f"op: expected 'add_tap', 'remove_tap' or 'preserve', got {_shown(op)}")
        unknown = sorted(set(command) - _FIELDS[op])
        if unknown:
            name = (
                unknown[0]
                if unknown[0].isidentifier() and len(unknown[0]) <= MAX_SHOWN
                else _shown(unknown[0])
            )
            raise _Refused(f"{name}: not a field of {op} (its fields: {', '.join(sorted(_FIELDS[op]))})")
        if op == "add_tap":
            content = command.get("content", False)
            if type(content) is not bool:
                raise _Refused(f"content: expected true or false, got {_shown(content)}")
            core.add_tap(
                Tap(
                    _name(command, "id"),
                    _text(command, "target", optional=True),
                    _time(command, "start"),
                    _time(command, "end"),
                    content,
                )
            )
        elif op == "remove_tap":
            core.remove_tap(_name(command, "id"))
        else:
            core.preserve(_name(command, "account"), _time(command, "since"))
    except _Refused as e:
        return {"ok": False, "error": str(e)}
    except (KeyError, TypeError, ValueError) as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    log.info("operator: %s", json.dumps(command, sort_keys=True))
    return {"ok": True}


async def _call(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return fn()


async def _session(
    core: RelayCore,
    stream: trio.SocketStream,
    run: Callable[[Callable[[], dict[str, Any]]], Awaitable[dict[str, Any]]],
) -> None:
    buffer = b""
    async with stream:
        while chunk := await stream.receive_some(65536):
            buffer += chunk
            if len(buffer) > MAX_LINE and b"\n" not in buffer:
                await stream.send_all(b'{"ok": false, "error": "line too long"}\n')
                return
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                try:
                    command = json.loads(line)
                except (ValueError, RecursionError) as e:  # (nesting past the parser's depth)
                    reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
                    answer: dict[str, Any] = {"ok": False, "error": f"not JSON: {reason}"}
                else:
                    answer = await run(partial(apply, core, command))
                await stream.send_all(json.dumps(answer).encode() + b"\n")


async def serve_admin(
    core: RelayCore,
    path: str,
    *,
    run: Callable[[Callable[[], dict[str, Any]]], Awaitable[dict[str, Any]]] = _call,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on the Unix socket ``path`` (mode 0600) for operator commands until cancelled.

    ``run`` carries out each command (a call on ``core``); a relay server passes its ``call``, so
    that orders are carried out between its batches, never while one is using the store."""
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    prepare_admin_path(path)
    old = os.umask(0o177)
    try:
        await sock.bind(path)
    finally:
        os.umask(old)
    bound = os.stat(path)
    sock.listen()
    listener = trio.SocketListener(sock)
    log.info("operator socket on %s", path)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await listener.accept()
                nursery.start_soon(_session, core, stream, run)
    finally:
        with trio.CancelScope(shield=True):
            await listener.aclose()
        # only the socket this relay made: not a file put there since, nor another relay's socket
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == bound.st_ino and os.stat(path).st_dev == bound.st_dev:
                os.unlink(path)


# The longest path a Unix socket can be bound to, in bytes: sockaddr_un's sun_path holds 108 on
# Linux, 104 on the BSDs and macOS, with its terminating NUL (unix(7)).
MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103


def prepare_admin_path(path: str) -> None:
    """Remove a socket a stopped relay left at ``path``; refuse anything else there (a file — the
    relay's own database, say — or the socket of a relay still listening on it), and a path no
    socket can be made at: in a folder that is not there, or longer than MAX_SOCKET_PATH (the relay
    started, and then stopped with "cannot serve: [Errno 2] No such file or directory" or "AF_UNIX
    path too long", naming neither --admin nor the path)."""
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise AdminPathError(
            f"--admin {path}: its folder {folder} does not exist; make it first, or give another path"
        )
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        raise AdminPathError(
            f"--admin {path}: {size} bytes long; a Unix socket's path is at most {MAX_SOCKET_PATH} bytes here: "
            "give a shorter one (a path relative to the current folder, say)"
        )
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        what = "a folder" if stat.S_ISDIR(mode) else "a file that is not a socket"
        raise AdminPathError(f"--admin {path}: {what} is there; give another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: a socket left by a relay that stopped without cleaning up
    else:
        raise AdminPathError(f"--admin {path}: another relay is listening there; give another path")
    finally:
        probe.close()


class AdminPathError(Exception):
    """The operator socket's path cannot be used; the message says why."""
