"""The interventions' interface (sims.access) and what they ask of clients/ and relay/.

- The package's face: every exported name exists, every demand and seizure has its class.
- The interventions change the world only through public methods: no private field of another
  object is read, no attribute of another object assigned, nothing rebuilt with ``replace``.
- What the seized-phone analysis asks of the ratchet (``parse_header``, ``SendingChain``,
  ``receiving_position``) gives the Double Ratchet's answers.
- The shared helpers: one seeded generator, one clock.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from relaysim import sims
from relaysim.clients.framing import frame_ciphertext
from relaysim.clients.ratchet import HEADER_LEN, parse_header
from relaysim.clients.session import Device, PeerAddress, Session, parse_ciphertext
from relaysim.clients.x3dh import InitialMessage
from relaysim.relay.compliance import ComplianceDesk
from relaysim.relay.core import RelayCore
from relaysim.relay.custody import ContentKey
from relaysim.relay.profiles import get_profile
from relaysim.relay.store import Store
from relaysim.sims.access import (
    INTERVENTIONS,
    KINDS,
    DeviceSeizure,
    GhostDevice,
    GhostParticipant,
    GlobalKey,
    KeyEscrow,
    RelaySwapsIdentity,
    base,
    intervention_for,
)
from relaysim.sims.access.base import Captured
from relaysim.sims.access.seizure import analyse_seizure
from relaysim.sims.scenario import (
    EXCEPTIONAL_DEMANDS,
    EscrowKeyStolen,
    ExceptionalAccess,
    IdentitySwap,
    LegalProcessEvent,
    SeizePhone,
)
from relaysim.sims.world.util import clock, seeded
from tests.conftest import seeded_rng

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_exports_what_it_names_and_a_class_per_demand() -> None:
    assert sorted(sims.access.__all__) == sorted(set(sims.access.__all__))
    assert all(hasattr(sims.access, name) for name in sims.access.__all__)
    assert {INTERVENTIONS[(ExceptionalAccess, d)] for d in EXCEPTIONAL_DEMANDS} == {
        KeyEscrow,
        GlobalKey,
        GhostDevice,
        GhostParticipant,
    }
    assert INTERVENTIONS[(EscrowKeyStolen, None)] is KeyEscrow
    assert INTERVENTIONS[(SeizePhone, None)] is DeviceSeizure
    assert INTERVENTIONS[(IdentitySwap, None)] is RelaySwapsIdentity
    assert {"exceptional_access", "escrow_key_stolen", "seize_phone", "relay_swaps_identity"} == KINDS
    assert intervention_for(LegalProcessEvent(at=0.0, process="subpoena", name="s", target="a")) is None
    assert intervention_for(ExceptionalAccess(at=0.0, demand="global_key")) is GlobalKey
    with pytest.raises(ValueError, match="unknown exceptional-access demand 'backdoor'"):
        intervention_for(ExceptionalAccess(at=0.0, demand="backdoor"))


def _reaches_into(source: str, path: str) -> list[str]:
    """Private reads of other objects, assignments to other objects' attributes, and ``replace`` calls."""
    found = []
    for node in ast.walk(ast.parse(source, path)):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append(f"{path}:{node.lineno}: reads {ast.unparse(node)}")
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for t in targets:
            if isinstance(t, ast.Attribute) and not (isinstance(t.value, ast.Name) and t.value.id == "self"):
                found.append(f"{path}:{getattr(node, 'lineno', 0)}: assigns {ast.unparse(t)}")
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("replace", "dataclasses.replace"):
            found.append(
                f"{path}:{getattr(node, 'lineno', 0)}: rebuilds {ast.unparse(node.args[0]) if node.args else '?'}"
            )
    return found


def test_the_interface_s_docstring_names_every_method_of_the_world() -> None:
    """sims.access.base's docstring lists what an intervention may call on the World; it left out
    ``relay_outputs`` (the records of a request an intervention carries to the relay itself)."""
    methods = [n for n, v in vars(base.World).items() if callable(v) and not n.startswith("_")]
    assert "relay_outputs" in methods
    assert base.__doc__ is not None
    assert [m for m in methods if f"``{m}``" not in base.__doc__] == []


def test_interventions_touch_the_world_only_through_public_methods() -> None:
    files = sorted((ROOT / "sims" / "access").glob("*.py"))
    assert {p.name for p in files} >= {
        "base.py",
        "escrow.py",
        "global_key.py",
        "ghost.py",
        "seizure.py",
        "identity_swap.py",
    }
    found = [f for p in files for f in _reaches_into(p.read_text(encoding="utf-8"), p.name)]
    assert found == []


def test_the_checker_sees_a_reach_into_another_object() -> None:
    bad = (
        "def f(sim, d):\n"
        "    x = sim._open_orders\n"
        "    d.agent.device.escrow = 1\n"
        "    sim.desk.profile = dataclasses.replace(sim.desk.profile, custody='provider')\n"
        "    self._mine = 2\n"
    )
    found = _reaches_into(bad, "bad.py")
    assert sorted(f.split(": ")[1].split(" ")[0] for f in found) == [
        "assigns",
        "assigns",
        "reads",
        "rebuilds",
    ]


# --- what the seizure asks of clients/ ------------------------------------------------------------


def _pair() -> tuple[Device, Device, PeerAddress, PeerAddress]:
    rng = seeded_rng(11)
    alice, bob = Device("alice", rng=rng), Device("bob", rng=rng)
    a, b = PeerAddress("alice", 1), PeerAddress("bob", 1)
    alice.start_session(b, bob.generate_prekeys(2, 2))
    return alice, bob, a, b


def test_parse_header_reads_the_ratchet_key_and_the_message_numbers() -> None:
    alice, _bob, _a, b = _pair()
    first = parse_ciphertext(alice.encrypt(b, b"one"))[1]
    second = parse_ciphertext(alice.encrypt(b, b"two"))[1]
    key = alice.sessions[b].ratchet.ratchet_key
    assert parse_header(first) == (key, 0, 0)
    assert parse_header(second) == (key, 0, 1)
    assert parse_header(second[: HEADER_LEN - 1]) is None


def test_a_copied_sending_chain_opens_later_messages_on_it_and_none_before() -> None:
    alice, _bob, _a, b = _pair()
    before = parse_ciphertext(alice.encrypt(b, b"before the copy"))[1]
    chain = alice.sessions[b].ratchet.sending_chain()
    assert chain is not None and chain.ratchet_key == alice.sessions[b].ratchet.ratchet_key
    later = [parse_ciphertext(alice.encrypt(b, t))[1] for t in (b"after one", b"after two", b"after three")]
    assert chain.open(before) is None  # the chain key only runs forward
    assert chain.open(later[1]) == b"after two"  # skipping ahead
    assert chain.open(later[0]) is None  # passed over: its key was not kept
    assert chain.open(later[2]) == b"after three"


def test_receiving_position_says_where_a_message_sits_on_the_chain() -> None:
    alice, bob, a, b = _pair()
    m0, m1, m2 = (parse_ciphertext(alice.encrypt(b, t)) for t in (b"0", b"1", b"2"))
    assert bob.decrypt(a, alice_frame(m0)) == b"0"
    assert bob.decrypt(a, alice_frame(m2)) == b"2"  # m1 skipped: its key is stored
    r = bob.sessions[a].ratchet
    h0, h1, h2 = (parse_header(m[1]) for m in (m0, m1, m2))
    assert h0 is not None and h1 is not None and h2 is not None
    assert r.has_skipped_key(h1) and not r.has_skipped_key(h0)
    assert r.receiving_position(h0) == "behind"
    next_one = parse_ciphertext(alice.encrypt(b, b"3"))[1]
    h3 = parse_header(next_one)
    assert h3 is not None and r.receiving_position(h3) == "ahead"
    assert r.receiving_position(h3._replace(dh=bytes(32))) is None  # another chain


def test_receiving_position_and_chains_cover_the_chains_kept_before_the_current_one() -> None:
    """A ratchet keeps the chain keys of up to four receiving chains before the current one, as
    libsignal does: a late message on one of them is "earlier" (its chain key runs forward to it),
    one already read on it "behind"."""
    alice, bob, a, b = _pair()
    first = parse_ciphertext(alice.encrypt(b, b"read"))
    late = parse_ciphertext(alice.encrypt(b, b"late"))[1]
    assert bob.decrypt(a, alice_frame(first)) == b"read"
    r = bob.sessions[a].ratchet
    chain = r.dhr
    assert chain is not None and r.receiving_chains() == [chain]
    assert alice.decrypt(b, bob.encrypt(a, b"turn")) == b"turn"
    assert bob.decrypt(a, alice.encrypt(b, b"new chain")) == b"new chain"
    assert r.receiving_chains() == [r.dhr, chain]
    h_first, h_late = parse_header(first[1]), parse_header(late)
    assert h_first is not None and h_late is not None
    assert r.receiving_position(h_late) == "earlier" and not r.has_skipped_key(h_late)
    assert r.receiving_position(h_first) == "behind"


def _captured(sender: Device, recipient: Device, body: bytes, message: int, at: float) -> Captured:
    return Captured(
        bytes([message]), message, f"{sender.address.account}/{sender.address.device}", recipient.address,
        False, body, at,
    )  # fmt: skip


def _seizure_rows(state: dict[str, object], captured: list[Captured]) -> dict[int, dict[str, object]]:
    return {r["message"]: r for r in _seizure_data(state, captured)["rows"]}


def _seizure_data(state: dict[str, object], captured: list[Captured]) -> dict[str, Any]:
    return analyse_seizure(
        state,  # type: ignore[arg-type]
        seized_at=10.0,
        device="bob/1",
        captured=captured,
        delivered={c.message: None for c in captured if c.message is not None},
        texts={},
        trust_root=bytes(33),
        epoch=0.0,
        rng=seeded_rng(12),
    )


def test_a_seized_copy_reads_a_late_message_on_an_earlier_chain_from_its_copied_chain_key() -> None:
    """The seized phone held the chain key of the peer's chain before the current one (a phone keeps
    it, as libsignal does, and derives nothing of it at the DH ratchet step): the copy reads a message
    of that chain still in flight at the seizure from that key, and says so."""
    alice, bob, a, b = _pair()
    assert bob.decrypt(a, alice.encrypt(b, b"read")) == b"read"
    late = alice.encrypt(b, b"late")
    assert alice.decrypt(b, bob.encrypt(a, b"turn")) == b"turn"
    assert bob.decrypt(a, alice.encrypt(b, b"new chain")) == b"new chain"
    rows = _seizure_rows(bob.to_dict(), [_captured(alice, bob, late, 1, 20.0)])
    assert rows[1]["opened"] and rows[1]["opened_text"] == "late"
    assert "chain key the seizure copied" in str(rows[1]["why"]) and "skipped" not in str(rows[1]["why"])


def test_the_seized_copy_counts_the_earlier_receiving_chains_keys_it_reads_with() -> None:
    """``Device.holdings`` (the ``phone_seized`` event's and the report's ``copied``) counts the chain keys
    of the receiving chains before the current one, which a phone keeps as libsignal does and which read
    a message of their chain the copy is then given, and the skipped keys of every session held, the
    inactive ones too (a copy takes them all)."""
    alice, bob, a, b = _pair()
    assert bob.decrypt(a, alice.encrypt(b, b"read")) == b"read"
    alice.encrypt(b, b"skipped")
    late = alice.encrypt(b, b"late")
    assert alice.decrypt(b, bob.encrypt(a, b"turn")) == b"turn"
    assert bob.decrypt(a, alice.encrypt(b, b"new chain")) == b"new chain"
    held = bob.holdings()
    assert held["earlier_receiving_chain_keys"] == 1 and held["skipped_message_keys"] == 0
    data = _seizure_data(bob.to_dict(), [_captured(alice, bob, late, 1, 20.0)])
    assert data["copied"]["earlier_receiving_chain_keys"] == 1
    assert data["rows"][0]["opened"]  # what that key reads
    alice.encrypt(b, b"in flight")
    assert bob.decrypt(a, alice.encrypt(b, b"after a gap")) == b"after a gap"  # one skipped key stored
    assert bob.holdings()["skipped_message_keys"] == 1
    # an inactive session (Sesame: both phones started one at once) holds keys too: here a copy of it
    bob.inactive[a] = [Session.from_dict(bob.sessions[a].to_dict())]
    held = bob.holdings()
    assert held["sessions"] == held["inactive_sessions"] == 1
    assert held["skipped_message_keys"] == held["earlier_receiving_chain_keys"] == 2


def test_a_message_the_phone_refuses_for_its_identity_key_is_read_by_the_copy_and_counted() -> None:
    """Under the ``block`` identity policy a prekey message from a new identity key for a pinned address
    decrypts but is refused (``UntrustedIdentity``): a check of the phone's, waiting for its user, not
    of the keys. The seizure's analysis says that (not that the seized state held no key for it, or that
    it was deleted, or past a DH ratchet step), and the copy, which need not wait for the user, reads it:
    it is among the ``opened`` the report counts, with its text, as its words say."""
    rng = seeded_rng(13)
    alice, bob = Device("alice", rng=rng), Device("bob", rng=rng, identity_policy="block")
    a = PeerAddress("alice", 1)
    alice.start_session(bob.address, bob.generate_prekeys(2, 2))
    assert bob.decrypt(a, alice.encrypt(bob.address, b"hello")) == b"hello"
    impostor = Device("alice", rng=rng)  # a new identity key under Alice's address
    impostor.start_session(bob.address, bob.generate_prekeys(2, 2))
    forged = impostor.encrypt(bob.address, b"from a new key")
    later = impostor.encrypt(bob.address, b"and again")
    captured = [_captured(impostor, bob, forged, 1, 20.0), _captured(impostor, bob, later, 2, 21.0)]
    data = _seizure_data(bob.to_dict(), captured)
    rows = {r["message"]: r for r in data["rows"]}
    why = str(rows[1]["why"])
    assert rows[1]["opened"] and rows[1]["opened_text"] == "from a new key"
    assert "identity key" in why and "'block'" in why and "alice/1" in why and "reads it" in why
    assert rows[2]["opened"] and rows[2]["opened_text"] == "and again"  # the copy took the new key
    assert data["opened"] == [1, 2]
    bob.identities.verify(a, alice.identity_key)  # a verified peer is blocking whatever the policy
    bob.identities.policy = "warn"
    rows = _seizure_rows(bob.to_dict(), [_captured(impostor, bob, forged, 1, 20.0)])
    assert rows[1]["opened"] and "verified the safety number" in str(rows[1]["why"])


def alice_frame(parsed: tuple[InitialMessage | None, bytes]) -> bytes:
    return frame_ciphertext(*parsed)


# --- what the interventions ask of relay/ -----------------------------------------------------------


def test_the_provider_cannot_provision_a_device_into_an_account_that_does_not_exist() -> None:
    from relaysim.clients.agent import DeviceAgent
    from relaysim.relay import wire

    agent = DeviceAgent(
        Device("nobody", 2, rng=seeded_rng(5)), registration_id=7, delivery_token=bytes(32), clock=lambda: 1.0
    )
    agent.register()
    (frame,) = agent.take_outbox()
    assert isinstance(frame, wire.Register)
    relay = RelayCore(Store(":memory:"), rng=seeded_rng(6))
    with pytest.raises(ValueError, match="no account 'nobody' to add device 2 to"):
        relay.provision_device(frame)


def test_the_desk_takes_only_a_key_the_provider_holds_and_then_holds_content() -> None:
    desk = ComplianceDesk(Store(":memory:"), get_profile("signal"))
    assert desk.profile.custody == "devices" and desk.keys == []
    with pytest.raises(ValueError, match="only use keys the provider holds, not 'enterprise'"):
        desk.hold_content_key(ContentKey("bes", bytes(32), "enterprise"))
    key = ContentKey("global-key", bytes(32), "provider")
    desk.hold_content_key(key)
    assert desk.keys == [key] and desk.profile.custody == "provider"


# --- the shared helpers ----------------------------------------------------------------------------


def test_one_seeded_generator_per_label() -> None:
    assert seeded(7, "device", "alice/1").random() == seeded(7, "device", "alice/1").random()
    assert seeded(7, "device", "alice/1").random() != seeded(7, "device", "bob/1").random()
    assert seeded(7, "exceptional", "escrow-key").random() != seeded(7, "escrow-key").random()


@pytest.mark.parametrize(
    ("t", "day", "expected"),
    [
        (0, None, "00:00:00"),
        (3725.9, None, "01:02:05"),
        (86400 + 61, None, "day 2 00:01:01"),
        (61, True, "day 1 00:01:01"),
        (86400 + 61, False, "24:01:01"),
    ],
)
def test_the_clock(t: float, day: bool | None, expected: str) -> None:
    assert clock(t, day=day) == expected
