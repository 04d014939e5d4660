"""How a device ciphertext is framed (ours; Signal's libsignal uses protobufs with a version nibble):

    0x01 ‖ ratchet message                                    — a normal message
    0x02 ‖ msgpack([InitialMessage, ratchet message])         — a prekey message

One module for it, below both ``clients.session`` (which frames what it sends) and
``clients.escrow`` (which opens what an escrow record points at), so neither imports the other.
"""

from __future__ import annotations

import msgpack

from relaysim.clients.errors import DecryptionError
from relaysim.clients.x3dh import InitialMessage
from relaysim.relay import wire

__all__ = ["MESSAGE_PREFIX", "TYPE_MESSAGE", "TYPE_PREKEY", "frame_ciphertext", "parse_ciphertext"]

TYPE_MESSAGE = 1
TYPE_PREKEY = 2
MESSAGE_PREFIX = bytes((TYPE_MESSAGE,))  # what a normal message starts with
_PREKEY_PREFIX = bytes((TYPE_PREKEY,))
# One packer for every prekey message, instead of ``msgpack.packb``'s new one (and its buffer) per
# call: the same bytes, ~0.3 µs less (a quarter of a prekey message's framing). ``pack`` runs
# to its end under the GIL (nothing here calls back into Python), so sharing it is safe.
_pack = msgpack.Packer(use_bin_type=True).pack


def frame_ciphertext(initial: InitialMessage | None, message: bytes) -> bytes:
    """A ratchet message, with the X3DH header still to attach (a prekey message) or without."""
    if initial is not None:
        return _PREKEY_PREFIX + _pack([initial.to_wire(), message])
    return MESSAGE_PREFIX + message


def parse_ciphertext(data: bytes) -> tuple[InitialMessage | None, bytes]:
    """Split a device ciphertext into (X3DH header or None, ratchet message). Bad input → DecryptionError."""
    if not data:
        raise DecryptionError()
    kind = data[0]
    if kind == TYPE_MESSAGE:
        return None, data[1:]
    if kind != TYPE_PREKEY:
        raise DecryptionError()
    try:  # (read as the wire reads a frame, an ext msgpack reserves a value: refused as any wrong value)
        message = wire.unpack_value(data[1:], "prekey message", max_bin_len=1 << 20)
    except wire.MsgpackError:
        raise DecryptionError() from None
    if type(message) is not list or len(message) != 2:
        raise DecryptionError()
    initial, body = message
    if type(body) is not bytes:
        raise DecryptionError()
    return InitialMessage.from_wire(initial), body
