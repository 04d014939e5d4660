"""Sealed conversations with ephemeral mailboxes (Martiny et al., NDSS 2021): the initiator opens a
fresh account for the peer's replies and receipts, and the statistical disclosure attack on the
responder no longer finds her."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from relaysim.sims.analysis.sda import statistical_disclosure
from relaysim.sims.analysis.view import from_db
from relaysim.sims.scenario import parse_scenario
from relaysim.sims.world.simulation import Simulation


def _text(mailboxes: str) -> str:
    rows = []
    for i in range(25):
        rows.append(f'{{ at = "{60 + i * 120}s", from = "alice", text = "alice to bob {i}" }}')
    bob_back = [f'{{ at = "{130 + i * 600}s", from = "bob", text = "bob answers {i}" }}' for i in range(5)]
    cd = [f'{{ at = "{90 + i * 97}s", from = "carol", text = "carol to dave {i}" }}' for i in range(30)]
    de = [f'{{ at = "{75 + i * 131}s", from = "erin", text = "erin to carol {i}" }}' for i in range(20)]
    people = "\n".join(
        f'[[people]]\nname = "{n}"\ndevices = [{{ region = "us", address = "203.0.113.{i + 1}" }}]'
        for i, n in enumerate(["alice", "bob", "carol", "dave", "erin"])
    )
    return f"""
[scenario]
name = "mailboxes"
duration = "1h"
seed = 11

[relay]
profile = "keep-everything"
sealed_sender = true

{people}

[[conversations]]
between = ["alice", "bob"]
messages = [{", ".join(rows + bob_back)}]

[[conversations]]
between = ["carol", "dave"]
messages = [{", ".join(cd)}]

[[conversations]]
between = ["erin", "carol"]
messages = [{", ".join(de)}]

[defences]
mailboxes = "{mailboxes}"
"""


def _run(tmp_path: Path, mailboxes: str) -> tuple[object, Path, list[dict[str, object]]]:
    db = tmp_path / f"{mailboxes}.db"
    events: list[dict[str, object]] = []
    result = Simulation(parse_scenario(_text(mailboxes)), db_path=db, transcript=events.append).run()
    return result, db, events


def test_without_mailboxes_the_sda_on_bob_finds_alice(tmp_path: Path) -> None:
    _result, db, _ = _run(tmp_path, "none")
    ranking = statistical_disclosure(from_db(db), targets=["bob"], receipts=True, epoch=1.0).rankings[0]
    assert ranking.rank("alice") == 1


def test_ephemeral_mailboxes_defeat_the_sda_linking_of_the_initiator(tmp_path: Path) -> None:
    result, db, events = _run(tmp_path, "ephemeral")
    # every text still arrives, the mailbox's on alice's phone
    assert all(len(m.delivered) == len(m.recipients) and m.lost is None for m in result.messages)  # type: ignore[attr-defined]
    opened = [e for e in events if e["kind"] == "mailbox_opened"]
    assert sorted((e["device"], e["peer"]) for e in opened) == [
        ("alice/1", "bob"),
        ("carol/1", "dave"),
        ("erin/1", "carol"),
    ]
    box = next(str(e["mailbox"]) for e in opened if e["device"] == "alice/1")
    view = from_db(db)
    ranking = statistical_disclosure(view, targets=["bob"], receipts=True, epoch=1.0).rankings[0]
    assert (
        ranking.top(n=1)[0][0] == box
    )  # the attack still works: it finds an account nobody is known to hold
    assert ranking.rank("alice") > 1
    # bob's receipts and replies went to the mailbox, never to alice's account
    receipts = [e for e in events if e["kind"] == "receipt_received" and e["device"] == "alice/1"]
    assert len(receipts) >= 25  # alice still hears bob's receipts: through the mailbox
    sealed_to_alice = [o for o in view.messages() if o.recipient_account == "alice"]
    assert sealed_to_alice == []  # bob is alice's only correspondent, and he writes to the mailbox
    assert len([o for o in view.messages() if o.recipient_account == box]) >= 30
    # the relay saw the mailbox only at exit addresses, never at any of the people's
    hosts_of_box = {o.host for o in view.observations if o.account == box and o.host is not None}
    assert hosts_of_box and all(h.startswith("185.220.101.") for h in hosts_of_box)


def test_the_mailbox_address_never_reaches_the_relay_in_the_clear(tmp_path: Path) -> None:
    _result, _db, events = _run(tmp_path, "ephemeral")
    box = next(
        str(e["mailbox"]) for e in events if e["kind"] == "mailbox_opened" and e["device"] == "alice/1"
    )
    sim = Simulation(parse_scenario(_text("ephemeral")), db_path=tmp_path / "again.db", capture_frames=True)
    sim.run()
    frames = sim.frames_to_relay or []
    # the name reaches the relay in the mailbox's own frames (its registration, log-ins) and as the
    # recipient of bob's sends, never inside what alice sends: her introduction is encrypted
    assert any(box.encode() in f for f in frames)
    assert not [f for f in frames if b"alice to bob" in f or b"bob answers" in f]
    assert not [f for f in frames if box.encode() in f and b"alice" in f]


def test_mailbox_runs_are_deterministic(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _run(tmp_path / "a", "ephemeral")[2]
    b = _run(tmp_path / "b", "ephemeral")[2]
    assert any(e["kind"] == "mailbox_opened" for e in a)
    assert json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def test_an_unknown_mailboxes_value_is_refused() -> None:
    import pytest

    from relaysim.sims.scenario import ScenarioError

    with pytest.raises(ScenarioError, match=r"defences\.mailboxes: expected one of 'none', 'ephemeral'"):
        parse_scenario(_text("sometimes"), "m.toml")
    assert replace(parse_scenario(_text("none")).defences, mailboxes="ephemeral").changed() == {
        "mailboxes": "ephemeral"
    }
