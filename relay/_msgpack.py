"""msgpack's Unpacker and unpackb as the wire reads with them: the same in msgpack's C build and in its
pure-Python one (``MSGPACK_PUREPYTHON=1``, or a platform with no C build), as far as how deep a body may nest.

The C build reads maps and arrays with a stack of its own, 1,024 deep (MSGPACK_EMBED_STACK_SIZE in
msgpack-python's unpack_template.h): one more is refused, StackError. The pure-Python build reads them by
recursion, one Python call a level, with no bound of its own but Python's recursion limit (1,000 calls by
default, fewer than 1,024 levels from inside a server's stack): a body the C build reads was refused as
nested too deep (RecursionError, which it says as StackError). Here the C build's bound is kept ahead of
the recursion (a map or an array past it refused as it begins, where the C build refuses it as its stack
would grow), and Python's recursion limit raised while a read runs, to hold that many levels above the
caller's stack, and put back as it was when the last read running ends (it is the whole process's: left
raised, a program that reads one frame ran for ever after with a limit of thousands, where its own
recursion was stopped at 1,000 before): so a body is read, or refused, the same in either build. (In its own module, not in
relay/wire.py: it is a Python pass for each value, which the wire's C build never runs.)
"""

from __future__ import annotations

import sys
import threading
import types
from typing import Any, Final

import msgpack

__all__ = ["MAX_NESTING", "Unpacker", "unpackb"]

MAX_NESTING: Final = 1024

Unpacker: Any = msgpack.Unpacker
unpackb: Any = msgpack.unpackb

if msgpack.Unpacker.__module__ == "msgpack.fallback":  # pragma: no cover (the pure-Python build only)
    from msgpack import fallback as _fallback

    _limit_lock = threading.Lock()
    _reading = 0  # reads running, in every thread (the recursion limit is the process's)
    _limit_before: int | None = None  # the limit before the first of them raised it
    _limit_raised: int | None = None  # the limit they raised it to

    def _headroom() -> None:
        """Python's recursion limit raised, if need be, to read MAX_NESTING levels above this stack, until
        :func:`_headroom_done` is called as many times as this was."""
        global _reading, _limit_before, _limit_raised
        frame: types.FrameType | None = sys._getframe()
        depth = 0
        while frame is not None:
            frame, depth = frame.f_back, depth + 1
        need = depth + 5 * MAX_NESTING + 200  # (up to four calls a level, and the hooks a value calls)
        with _limit_lock:
            if not _reading:
                _limit_before, _limit_raised = sys.getrecursionlimit(), None
            _reading += 1
            if sys.getrecursionlimit() < need:
                sys.setrecursionlimit(need)
                _limit_raised = need

    def _headroom_done() -> None:
        """The recursion limit put back as it was before the reads, when the last read running ends (unless
        someone else set it meanwhile: theirs is kept)."""
        global _reading
        with _limit_lock:
            _reading -= 1
            if (
                not _reading
                and _limit_raised is not None
                and _limit_before is not None
                and sys.getrecursionlimit() == _limit_raised
            ):
                sys.setrecursionlimit(_limit_before)

    class _BoundedUnpacker(_fallback.Unpacker):
        """msgpack's pure-Python Unpacker, refusing a map or an array MAX_NESTING levels deep (StackError),
        as the C build's does, with the room in Python's stack to read any body it takes; an
        object_pairs_hook handed a list of the pairs, as the C build hands it (msgpack 1.0.5's pure
        build, the lowest declared, handed a generator: a hook that reads no pairs, ``type``, read none)."""

        _levels = 0

        def __init__(self, *args: Any, object_pairs_hook: Any = None, **kwargs: Any) -> None:
            if object_pairs_hook is not None:  # (msgpack 1.0's pure build hands it a generator of the pairs)
                hook = object_pairs_hook

                def object_pairs_hook(pairs: Any) -> Any:
                    return hook(pairs if type(pairs) is list else list(pairs))

            super().__init__(*args, object_pairs_hook=object_pairs_hook, **kwargs)

        def _unpack(self, execute: int = _fallback.EX_CONSTRUCT) -> Any:
            if self._levels:
                self._levels += 1
                try:
                    return super()._unpack(execute)
                finally:
                    self._levels -= 1
            _headroom()
            self._levels = 1
            try:
                return super()._unpack(execute)
            finally:
                self._levels = 0
                _headroom_done()

        def _read_header(self) -> Any:
            header = super()._read_header()
            if self._levels > MAX_NESTING and header[0] in (_fallback.TYPE_ARRAY, _fallback.TYPE_MAP):
                raise msgpack.StackError
            return header

    def _bounded_unpackb(packed: Any, **kwargs: Any) -> Any:
        """msgpack.fallback.unpackb, read by _BoundedUnpacker."""
        unpacker = _BoundedUnpacker(None, max_buffer_size=len(packed), **kwargs)
        unpacker.feed(packed)
        try:
            ret = unpacker._unpack()
        except msgpack.OutOfData:
            raise ValueError("Unpack failed: incomplete input") from None
        except RecursionError:
            raise msgpack.StackError from None
        if unpacker._got_extradata():
            raise msgpack.ExtraData(ret, unpacker._get_extradata())
        return ret

    Unpacker = _BoundedUnpacker
    unpackb = _bounded_unpackb
