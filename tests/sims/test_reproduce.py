"""The SDA reproduction: receipts link sealed-sender users; turning them off (or a fresh connection per
sealed send, for the address join) defeats the attack."""

from __future__ import annotations

from dataclasses import replace

from relaysim.sims.reproduce import run_variant
from relaysim.sims.scenario import resolve_scenario
from relaysim.sims.world.traffic import expand_population


def _small() -> object:
    sc = resolve_scenario("sda-martiny-2021")
    assert sc.generate is not None
    return expand_population(replace(sc, duration=1800.0, generate=replace(sc.generate, people=20)))


def test_receipts_link_sealed_sender_users_and_turning_them_off_defeats_it() -> None:
    sc = _small()
    base = run_variant((sc, "as written", {}, 8))  # type: ignore[arg-type]
    off = run_variant((sc, "receipts off", {"receipts": "off"}, 8))  # type: ignore[arg-type]
    assert base.targets == off.targets >= 3
    # 20 people: the random epochs hit a contact often, so it takes more messages than at scale
    assert base.linked_within(30) >= base.targets // 2
    # Without receipts only the scenario's replies (30 %, minutes later) correlate with a delivery,
    # so a target is linked now and then by chance, but far less often than with receipts.
    assert off.linked_within(30) * 3 <= base.linked_within(30)
    assert base.address_join_correct > 0.9


def test_a_fresh_connection_per_sealed_send_defeats_the_address_join() -> None:
    sc = _small()
    fresh = run_variant(
        (sc, "fresh", {"sealed_connection": "fresh", "bundle_fetch": "unauthenticated"}, 8)  # type: ignore[arg-type]
    )
    assert fresh.address_join_correct < 0.1


def test_ephemeral_mailboxes_defeat_the_sda_on_the_responder() -> None:
    """Martiny et al.'s sealed conversations: whoever writes first opens a mailbox; the target's
    receipts and replies go there, so its true correspondent no longer rises to the top."""
    sc = _small()
    base = run_variant((sc, "as written", {}, 8))  # type: ignore[arg-type]
    boxes = run_variant((sc, "mailboxes", {"mailboxes": "ephemeral"}, 8))  # type: ignore[arg-type]
    assert base.targets == boxes.targets >= 3
    assert base.linked_within(30) >= base.targets // 2
    assert boxes.linked_within(30) * 3 <= base.linked_within(30)
