"""The simulated message path (issue #15): what its shortcuts must keep.

The simulation reads each frame toward the relay whole from its bytes (no per-connection stream
buffer): the relay must handle exactly the frames those bytes decode to — the bytes the property
tests inspect — and refuse an oversized frame as the server's decoder does. Peer addresses are
named tuples: their hash and order must be those of ``(account, device)``, as the frozen
dataclass's were, so that every set and sort of them comes out as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relaysim.clients.session import PeerAddress
from relaysim.relay import wire
from relaysim.sims.bench.sim import steady_scenario
from relaysim.sims.world import simulation as S


def test_the_relay_handles_exactly_the_frames_its_captured_bytes_decode_to(tmp_path: Path) -> None:
    sim = S.Simulation(steady_scenario(2, 6), db_path=tmp_path / "relay.db", capture_frames=True)
    handled: list[Any] = []
    real = sim.relay.handle

    def handle(ctx: Any, frame: wire.Request) -> Any:
        handled.append(frame)
        return real(ctx, frame)

    sim.relay.handle = handle  # type: ignore[method-assign,assignment]
    result = sim.run()
    assert result.frames_to_relay is not None
    decoder = wire.FrameDecoder("relay")  # the server's reader, over the same bytes in order
    decoded = []
    for data in result.frames_to_relay:
        decoder.receive_data(data)
        decoded.append(decoder.next_frame())
    assert decoded == handled
    kinds = {f.kind for f in handled}
    assert {"register", "authenticate", "send", "ack"} <= kinds, kinds
    assert sum(len(m.delivered) for m in result.messages) == 2 * 3 + 6


def test_an_oversized_frame_is_refused_as_the_servers_decoder_refuses_it() -> None:
    frame = wire.encode(wire.Ping(id=1))
    assert isinstance(S._relay_reads(frame), wire.Ping)
    too_big = wire.PREFIX_SIZE + wire.DEFAULT_MAX_FRAME_SIZE + 1
    data = too_big.to_bytes(4, "big") + bytes(too_big)
    with pytest.raises(wire.RemoteProtocolError) as e:
        S._relay_reads(data)
    assert e.value.code == wire.ErrorCode.FRAME_TOO_LARGE


def test_peer_addresses_hash_and_sort_as_account_then_device() -> None:
    a1, a2, b1 = PeerAddress("a", 1), PeerAddress("a", 2), PeerAddress("b", 1)
    assert hash(a1) == hash(("a", 1)) and hash(PeerAddress("a", 1)) == hash(a1)
    assert sorted([b1, a2, a1]) == [a1, a2, b1]
    assert a1 == PeerAddress(account="a", device=1) and a1 != a2
    assert (a1.account, a1.device) == ("a", 1)
    assert repr(a1) == "PeerAddress(account='a', device=1)"
    with pytest.raises(AttributeError):
        a1.account = "c"  # type: ignore[misc]
