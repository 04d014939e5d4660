"""Envelopes a phone does not read are counted by why, in a run's outputs (summary.json, summary.md and
the transcript): one that did not decrypt (``decryption_failed``), one that did, from a changed identity
key the user has not approved (``untrusted_identity``), and a sealed one under the phone's own address
(``sealed_sender_self_send``). The last two opened; neither is counted as undecryptable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from relaysim.clients import agent as A
from relaysim.clients.identity import IdentityChanged, UntrustedIdentity
from relaysim.clients.keys import KemPreKey, PreKeyBundle, SignedPreKey
from relaysim.clients.session import Device
from relaysim.sims import report
from relaysim.sims.live import _LiveRun, run_live
from relaysim.sims.report import run_to_dir
from relaysim.sims.scenario import parse_scenario
from relaysim.sims.world.simulation import Simulation
from tests.conftest import seeded_rng

SCENARIO = """
[scenario]
name = "unread-reasons"
duration = "1h"
seed = 11

[relay]
region = "eu"
profile = "signal"  # sealed sender on

[defences]
identity_changes = "block"

[[people]]
name = "ilya"
devices = [{ region = "eu", address = "198.51.100.60" }]

[[people]]
name = "nadia"
devices = [{ region = "eu", address = "198.51.100.61" }]

[[conversations]]
between = ["ilya", "nadia"]
messages = [
  { at = "5m", from = "ilya", text = "Did the lawyer call back?" },
  { at = "10m", from = "nadia", text = "Yes. Tomorrow at nine." },
]
"""


def _bundle(sim: Simulation, account: str) -> PreKeyBundle:
    """The bundle the relay's store holds for ``account``'s device 1 (no one-time prekey needed)."""
    (record,) = [r for r in sim.store.devices(account) if r.device == 1]
    spk, kem = record.signed_prekey, record.last_resort_kem_prekey
    return PreKeyBundle(
        identity_key=record.identity_key,
        signed_prekey=SignedPreKey(spk.id, spk.public, spk.signature),
        kem_prekey=KemPreKey(kem.id, kem.public, kem.signature, True),
    )


class ThreeUnreadable(Simulation):
    """At 30 minutes the relay queues for Nadia's phone one envelope of each kind she cannot read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sched.at(1800.0, self._forge)

    def _forge(self) -> None:
        nadia = self.by_address[("nadia", 1)].agent
        text = A.pad(b"unread", nadia.padding)
        # not a message at all: it does not decrypt
        self.forge_envelope(("nadia", 1), bytes(120), sealed=False, source=("ilya", 1))
        # a first message from a new identity key under Ilya's address: it decrypts, and her phone
        # ("block") refuses the changed key
        impostor = Device("ilya", 1, rng=seeded_rng(21), pq=True)
        impostor.start_session(nadia.device.address, _bundle(self, "nadia"))
        body = impostor.encrypt(nadia.device.address, text)
        self.forge_envelope(("nadia", 1), body, sealed=False, source=("ilya", 1))
        # sealed, with a good certificate naming her own phone: a self-send
        own = Device.from_dict(nadia.device.to_dict(), rng=seeded_rng(22))
        own.start_session(own.address, _bundle(self, "nadia"))
        expires = int(self.relay.clock()) + self.relay.certificate_ttl
        certificate = self.relay.identity.issue("nadia", 1, own.identity_key, expires).encode()
        self.forge_envelope(("nadia", 1), own.seal(own.address, text, certificate), sealed=True)


def test_a_run_counts_each_unread_envelope_by_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "Simulation", ThreeUnreadable)
    result, _summary = run_to_dir(parse_scenario(SCENARIO), tmp_path)
    assert result.undecryptable == 1
    assert result.refused == {A.UNTRUSTED_IDENTITY: 1, A.SEALED_SENDER_SELF_SEND: 1}
    messages = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["messages"]
    assert messages["undecryptable"] == 1
    assert messages["refused"] == {"untrusted_identity": 1, "sealed_sender_self_send": 1}
    assert messages["device_deliveries"] == 2 and messages["plaintext_mismatches"] == 0
    md = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "| envelopes devices could not decrypt | 1 |" in md
    assert "| refused: from a changed identity key the user has not approved | 1 |" in md
    assert "| dropped: sealed under the device's own address (a self-send) | 1 |" in md
    lines = (tmp_path / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    unread = [e for e in map(json.loads, lines) if e["kind"] == "undecryptable"]
    assert sorted(e.get("reason", A.DECRYPTION_FAILED) for e in unread) == sorted(
        [A.DECRYPTION_FAILED, A.UNTRUSTED_IDENTITY, A.SEALED_SENDER_SELF_SEND]
    )
    assert all(e["device"] == "nadia/1" and e["message"] is None for e in unread)


def test_a_live_run_counts_them_so_too() -> None:
    """sims/live.py's count of what its phones reported (``_LiveRun._unread_counts``), from the agents'
    events as they come: a duplicate, and one ``Undecryptable`` of each reason."""
    run = _LiveRun.__new__(_LiveRun)  # (the counting only: no relay process, no phones)
    run.envelope_message, run.messages, run._unread = {}, {}, []
    run.now = lambda: 10.0  # type: ignore[method-assign]
    phone: Any = type("Phone", (), {"name": "nadia/1"})()
    for event in [
        A.Duplicate(b"\x00" * 16, False),
        A.Undecryptable(b"\x01" * 16, False),
        A.Undecryptable(b"\x02" * 16, False, A.UNTRUSTED_IDENTITY),
        A.Undecryptable(b"\x03" * 16, True, A.SEALED_SENDER_SELF_SEND),
        A.Undecryptable(b"\x04" * 16, True, A.SEALED_SENDER_SELF_SEND),
    ]:
        run._unreadable(phone, event)
    assert run._unread_counts() == (1, {"untrusted_identity": 1, "sealed_sender_self_send": 2}, 1)


def _refuse_the_lawyer_question(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nadia's phone refuses Ilya's first message as from an identity key the user has not approved (it
    decrypted), as ``Device`` refuses one under ``identity_changes = "block"`` (its session kept as the
    decryption left it: her answer goes out on it either way)."""
    decrypt = Device._decrypt

    def refusing(self: Device, peer: Any, ciphertext: bytes, identity: bytes | None) -> bytes:
        plaintext = decrypt(self, peer, ciphertext, identity)
        if self.address.account == "nadia" and b"Did the lawyer call back?" in plaintext:
            raise UntrustedIdentity(
                IdentityChanged(peer, b"\x01" * 32, b"\x02" * 32, "message", False, False)
            )
        return plaintext

    monkeypatch.setattr(Device, "_decrypt", refusing)


def _unread_records(out: Path) -> list[dict[str, Any]]:
    lines = (out / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    return [
        {k: v for k, v in e.items() if k not in ("t", "at")}
        for e in map(json.loads, lines)
        if e["kind"] in ("undecryptable", "duplicate_dropped")
    ]


def test_a_live_run_writes_the_simulators_records_of_what_its_phones_could_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live run (sims/live.py: a relay process, trio clients) transcribes an envelope its phone refused
    as the simulator does, with its message and reason, and counts it so (it wrote no such record
    before: it learns which copies are duplicates only at the end of the run)."""
    _refuse_the_lawyer_question(monkeypatch)
    scenario = parse_scenario(SCENARIO)
    run_to_dir(scenario, tmp_path / "sim")
    assert run_live(scenario, tmp_path / "live", time_scale=0.0005, quiet=True) == 0
    expected = [{"kind": "undecryptable", "device": "nadia/1", "message": 1, "reason": A.UNTRUSTED_IDENTITY}]
    assert _unread_records(tmp_path / "sim") == expected
    assert _unread_records(tmp_path / "live") == expected
    for run in ("sim", "live"):
        summary = json.loads((tmp_path / run / "summary.json").read_text(encoding="utf-8"))
        assert summary["messages"]["refused"] == {"untrusted_identity": 1, "sealed_sender_self_send": 0}
        assert summary["messages"]["undecryptable"] == summary["messages"]["duplicates_dropped"] == 0


def test_a_live_run_checks_the_phones_duplicates_against_the_relays_records() -> None:
    """The live driver cannot tie a receipt's or a cover message's copies to their send, so it took the
    phone's word that one was a duplicate; now the relay's records are set beside it: a copy is a second
    envelope the relay accepted for that device, of the same size, and a "duplicate" the relay accepted
    once is a disagreement, reported (``_LiveRun._relay_check``)."""
    from relaysim.relay.metadata import MetadataRecord, RecordKind

    run = _LiveRun.__new__(_LiveRun)  # (the checking only: no relay process, no phones)
    run.envelope_message, run.messages, run._unread = {b"\x09" * 16: 1}, {}, []
    run.now = lambda: 10.0  # type: ignore[method-assign]
    phone: Any = type("Phone", (), {"name": "nadia/1"})()
    for event in [
        A.Duplicate(b"\x00" * 16, True),  # a receipt sent twice: the relay accepted two of its size
        A.Duplicate(b"\x01" * 16, True),  # a "duplicate" the relay accepted once: a disagreement
        A.Duplicate(b"\x02" * 16, True),  # the relay kept no record of it
        A.Duplicate(b"\x09" * 16, False),  # a planned message's: the driver's own count, not checked here
        A.Undecryptable(b"\x03" * 16, True),  # not a duplicate by the phone's word
    ]:
        run._unreadable(phone, event)

    def sealed(eid: bytes, size: int, to: str = "nadia", device: int = 1) -> MetadataRecord:
        return MetadataRecord(
            RecordKind.SEALED_SEND, recipient_account=to, recipient_device=device, envelope_id=eid, size=size
        )

    records = [
        sealed(b"\x00" * 16, 120),
        sealed(b"\x10" * 16, 120),  # the first's copy
        sealed(b"\x01" * 16, 200),
        sealed(b"\x11" * 16, 200, device=2),  # the same size, but for another device: no copy
        sealed(b"\x12" * 16, 201),
        MetadataRecord(RecordKind.DELIVERY, account="nadia", device=1, envelope_id=b"\x01" * 16, size=200),
    ]
    check = run._relay_check(records)
    assert (check["duplicates_by_phones"], check["confirmed"], check["unchecked"]) == (3, 1, 1)
    assert check["disagreements"] == [
        {
            "t": 10.0,
            "device": "nadia/1",
            "envelope_id": (b"\x01" * 16).hex(),
            "size": 200,
            "why": "the phone dropped it as a duplicate; the relay accepted no other envelope of its size for "
            "that device",
        }
    ]


def test_a_disagreement_on_a_mailbox_s_duplicate_names_the_mailbox() -> None:
    """``_LiveRun._relay_check`` named the holder's phone in a disagreement over a copy a mailbox on it
    dropped as a duplicate, though the relay accepted that envelope for the mailbox's device: now it names
    the device the envelope was for (the mailbox's), as the transcript and the counts do."""
    from relaysim.relay.metadata import MetadataRecord, RecordKind

    run = _LiveRun.__new__(_LiveRun)  # (the checking only: no relay process, no phones)
    run.envelope_message, run.messages, run._unread = {}, {}, []
    run.now = lambda: 10.0  # type: ignore[method-assign]
    phone: Any = type("Phone", (), {"name": "amira/1"})()
    box: Any = type("Mailbox", (), {"name": "mbx-7f3a/1"})()
    run._unreadable(phone, A.Duplicate(b"\x01" * 16, True), box)
    records = [
        MetadataRecord(
            RecordKind.SEALED_SEND,
            recipient_account="mbx-7f3a",
            recipient_device=1,
            envelope_id=b"\x01" * 16,
            size=200,
        )
    ]
    check = run._relay_check(records)
    assert [d["device"] for d in check["disagreements"]] == ["mbx-7f3a/1"]
