"""The generated field checks of relay.wire messages against the specs they are made from.

``Message.__post_init__`` runs one generated function per class (``_compile_checks``): each
field's spec inlined as a condition, the spec's own ``check`` called only when it fails. These
tests hold it to the plain loop over the specs — the same outcome, value or error, field by field.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaysim.relay import wire
from relaysim.relay.wire import LocalProtocolError, Message

CLASSES = sorted(
    {c for c in vars(wire).values() if isinstance(c, type) and issubclass(c, Message) and c is not Message}
    | set(wire.REQUEST_KINDS.values())
    | set(wire.RESPONSE_KINDS.values()),
    key=lambda c: c.__name__,
)

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=2**64 + 3),
    st.sampled_from([0, 1, 2**32 - 1, 2**32, 2**64 - 1, 2**64]),
    st.text(max_size=70),
    st.sampled_from(["a", "x" * 64, "x" * 65, "tab\there", "x" * 5000]),
    st.binary(max_size=40),
    st.sampled_from([bytes(32), bytes(33), bytes(64), bytes(16), bytes(1568)]),
    st.lists(st.integers(0, 5), max_size=3),
    st.just(()),
    st.floats(allow_nan=False),
)


def _bare(cls: type[Message], values: list[Any]) -> Any:
    obj = object.__new__(cls)
    for (name, _, _), v in zip(cls._specs(), values, strict=True):
        object.__setattr__(obj, name, v)
    return obj


def _outcome(run: Any, obj: Any, cls: type[Message]) -> Any:
    try:
        run(obj)
    except LocalProtocolError as e:
        return ("error", e.code, e.message, e.field)
    return ("ok", tuple((type(getattr(obj, n)), getattr(obj, n)) for n, _, _ in cls._specs()))


def _reference(obj: Any) -> None:
    """The checks as a plain loop over the field specs (what __post_init__ did before)."""
    for name, spec, _ in type(obj)._specs():
        value = getattr(obj, name)
        checked = spec.check(value, name)
        if checked is not value:
            object.__setattr__(obj, name, checked)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_generated_checks_match_the_specs(cls: type[Message], data: st.DataObject) -> None:
    values = [data.draw(VALUES, label=name) for name, _, _ in cls._specs()]
    assert _outcome(Message.__post_init__, _bare(cls, values), cls) == _outcome(
        _reference, _bare(cls, values), cls
    )


def test_a_bad_field_is_named_by_the_generated_checks() -> None:
    with pytest.raises(LocalProtocolError) as e:
        wire.Ack(id=1, envelope_ids=(b"short",))
    assert e.value.field == "envelope_ids[0]"
    with pytest.raises(LocalProtocolError) as e:
        wire.Ack(id=-1, envelope_ids=())
    assert e.value.field == "id"


def test_a_list_becomes_a_tuple_through_the_generated_checks() -> None:
    ack = wire.Ack(id=1, envelope_ids=[bytes(wire.ENVELOPE_ID_SIZE)])  # type: ignore[arg-type]
    assert type(ack.envelope_ids) is tuple
