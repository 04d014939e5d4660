"""relay._frozen.quick_init: the cheaper __init__ of the relay's frozen dataclasses behaves as the
one dataclasses generates (signature, defaults, __post_init__, frozen), and the relay's hot-path
classes have it."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from relaysim.relay import wire
from relaysim.relay._frozen import quick_init
from relaysim.relay.core import DeviceAddress, Push, Reply
from relaysim.relay.metadata import MetadataRecord, RecordKind
from relaysim.relay.store import StoredEnvelope


def _pair() -> tuple[type, type]:
    def make() -> type:
        @dataclasses.dataclass(frozen=True, slots=True)
        class Point:
            x: int
            y: int = 2
            seen: tuple[int, ...] = ()

            def __post_init__(self) -> None:
                if self.x < 0:
                    raise ValueError("x must not be negative")

        return Point

    return make(), quick_init(make())


def test_quick_init_makes_the_same_objects_as_the_dataclass_init() -> None:
    plain, quick = _pair()
    assert quick.__init__ is not plain.__init__
    assert inspect.signature(quick.__init__) == inspect.signature(plain.__init__)
    for args, kwargs in [((1,), {}), ((1, 5), {}), ((), {"x": 3, "seen": (1,)}), ((4,), {"y": 0})]:
        a, b = plain(*args, **kwargs), quick(*args, **kwargs)
        assert dataclasses.astuple(a) == dataclasses.astuple(b) and hash(a) == hash(b)
        with pytest.raises(dataclasses.FrozenInstanceError):
            b.x = 9
    with pytest.raises(ValueError, match="must not be negative"):  # __post_init__ runs
        quick(-1)
    with pytest.raises(TypeError):
        quick()
    with pytest.raises(TypeError):
        quick(1, z=2)


def test_classes_it_cannot_speed_up_keep_their_own_init() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class WithFactory:
        items: list[int] = dataclasses.field(default_factory=list)

    init = WithFactory.__init__
    assert quick_init(WithFactory).__init__ is init
    assert WithFactory().items == [] and WithFactory().items is not WithFactory().items

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        x: int

    with pytest.raises(TypeError, match="not a dataclass with slots"):
        quick_init(NoSlots)


def test_the_relays_hot_path_classes_have_it() -> None:
    for cls in (
        MetadataRecord,
        StoredEnvelope,
        DeviceAddress,
        Reply,
        Push,
        wire.Sent,
        wire.Deliver,
        wire.Envelope,
    ):
        assert cls.__init__.__code__.co_filename.endswith("<string>"), cls
        assert "_set0" in cls.__init__.__code__.co_names, cls
    record = MetadataRecord(RecordKind.SEND, 1.0, 7, envelope_id=b"i" * 16)
    assert (record.kind, record.time, record.connection, record.host, record.envelope_id) == (
        RecordKind.SEND,
        1.0,
        7,
        None,
        b"i" * 16,
    )
    with pytest.raises(wire.ProtocolError):  # a wire message still checks its fields
        wire.Acked(id=1, count=-1)
