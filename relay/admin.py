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

import json
import logging
import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio  # type: ignore[import-untyped,unused-ignore]

from relaysim.relay.core import RelayCore, Tap

__all__ = ["MAX_LINE", "apply", "serve_admin"]

log = logging.getLogger("relay.admin")
MAX_LINE = 64 * 1024


def apply(core: RelayCore, command: object) -> dict[str, Any]:
    """Carry out one operator command on ``core``; the answer to send back."""
    try:
        if not isinstance(command, dict):
            raise ValueError(f"expected a JSON object, got {type(command).__name__}")
        op = command.get("op")
        if op == "add_tap":
            core.add_tap(
                Tap(
                    str(command["id"]),
                    None if command.get("target") is None else str(command["target"]),
                    float(command["start"]),
                    float(command["end"]),
                    bool(command.get("content", False)),
                )
            )
        elif op == "remove_tap":
            core.remove_tap(str(command["id"]))
        elif op == "preserve":
            core.preserve(str(command["account"]), float(command["since"]))
        else:
            raise ValueError(f"op: expected 'add_tap', 'remove_tap' or 'preserve', got {op!r}")
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
                except ValueError as e:
                    answer: dict[str, Any] = {"ok": False, "error": f"not JSON: {e}"}
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
    if os.path.exists(path):
        os.unlink(path)
    old = os.umask(0o177)
    try:
        await sock.bind(path)
    finally:
        os.umask(old)
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
        if os.path.exists(path):
            os.unlink(path)
