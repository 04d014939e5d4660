"""A seized phone, and what its copied state opens: forward secrecy and post-compromise security, measured.

``seize_phone``: at that moment the device's whole protocol state is copied (``Device.to_dict``:
identity key, prekey secrets, every session). The phone is handed back and keeps running (a
forensic copy at a border, say). At the end the copy is run against every envelope to or from
that device, in order, to see what it opens and why.

What is captured: every envelope to or from the phone that the relay accepted, from the first
minute (recorded from the frames the simulation carries). That is what a wiretap on the account
from the start would collect, sealed envelopes included; giving the agency everything means that
the only thing keeping a message closed is the cryptography.

What the copy holds is asked of ``clients``: the ratchet header (``clients.ratchet.parse_header``),
the sending chains it can run forward (``DoubleRatchet.sending_chain``), where a message sits on a
receiving chain (``DoubleRatchet.receiving_position``, ``has_skipped_key``), which receiving chains'
keys the seizure took (``DoubleRatchet.receiving_chains``: the current one and, as libsignal keeps
them, up to four before it, each of which reads every later message of its chain).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Self

from relaysim.clients import escrow as _escrow
from relaysim.clients import sealed
from relaysim.clients.agent import unpad
from relaysim.clients.errors import DecryptionError
from relaysim.clients.identity import UntrustedIdentity
from relaysim.clients.ratchet import MessageHeader, SendingChain, parse_header
from relaysim.clients.session import Device, PeerAddress, parse_ciphertext
from relaysim.relay import wire
from relaysim.sims.access.base import Captured, DeviceView, Intervention, World
from relaysim.sims.access.reports import ExceptionalReport, seizure_markdown
from relaysim.sims.scenario import SeizePhone, TimelineEvent
from relaysim.sims.world.util import clock as _clock
from relaysim.sims.world.util import seeded

__all__ = ["DeviceSeizure", "analyse_seizure"]


class DeviceSeizure(Intervention):
    """One phone seized (``seize_phone``): its state copied at that moment, analysed at the end."""

    answers = ((SeizePhone, None),)
    order = 3

    def __init__(self, world: World, device: str) -> None:
        super().__init__(world)
        self.device = device
        me = world.devices[device].agent
        self._me = PeerAddress(me.account, me.device_id)
        self._my_name = f"{me.account}/{me.device_id}"
        self.at: float | None = None
        self.state: dict[str, Any] | None = None  # Device.to_dict() at the moment of seizure
        # every envelope to or from the phone the relay accepted, from the start of the run
        self.captured: list[Captured] = []

    @classmethod
    def for_event(cls, world: World, event: TimelineEvent) -> Self:
        assert isinstance(event, SeizePhone)
        return cls(world, event.device)

    @property
    def started(self) -> float | None:
        return self.at

    def on_event(self, event: TimelineEvent) -> None:
        world = self.world
        device = world.devices[self.device].agent.device
        state = device.to_dict()
        held = device.holdings()
        self.at, self.state = world.sched.now, state
        world.emit(
            {
                "t": world.sched.now,
                "kind": "phone_seized",
                "device": self.device,
                "copied": {
                    "sessions": held["sessions"] + held["inactive_sessions"],
                    "skipped_message_keys": held["skipped_message_keys"],
                    "earlier_receiving_chain_keys": held["earlier_receiving_chain_keys"],
                    "one_time_prekeys": held["one_time_prekeys"],
                    "kem_prekeys": held["kem_prekeys"],
                },
                "what_it_means": "the phone's keys as they stand now; the phone is handed back and keeps running",
            }
        )

    def on_accepted(
        self, sender: DeviceView, frame: wire.Send | wire.SealedSend, envelope_ids: tuple[bytes, ...]
    ) -> None:
        world = self.world
        t = world.sched.now
        for env, eid in zip(frame.envelopes, envelope_ids, strict=True):
            recipient = PeerAddress(frame.to, env.device)
            if recipient != self._me and sender.name != self._my_name:
                continue
            self.captured.append(
                Captured(
                    eid,
                    world.envelope_message.get(eid),
                    sender.name,
                    recipient,
                    isinstance(frame, wire.SealedSend),
                    env.body,
                    t,
                )
            )

    def finish(self) -> list[ExceptionalReport]:
        if self.state is None or self.at is None:
            return []
        world = self.world
        data = analyse_seizure(
            self.state,
            seized_at=self.at,
            device=self.device,
            captured=self.captured,
            delivered={mid: m.delivered.get(self.device) for mid, m in world.messages.items()},
            texts={mid: m.planned.text for mid, m in world.messages.items()},
            trust_root=world.relay.trust_root_public,
            epoch=world.relay.clock() - world.sched.now,
            rng=seeded(world.scenario.seed, "exceptional", "seized-copy", self.device).randbytes,
            padding=world.padding,
        )
        data["scenario"] = world.scenario.name
        return [ExceptionalReport("device-seizure", data, seizure_markdown(data, world.scenario.name))]


def analyse_seizure(
    state: dict[str, Any],
    *,
    seized_at: float,
    device: str,
    captured: list[Captured],
    delivered: dict[int, float | None],
    texts: dict[int, str],
    trust_root: bytes,
    epoch: float,
    rng: Callable[[int], bytes],
    padding: str = "none",
) -> dict[str, Any]:
    """Run a copy of the seized state over every captured envelope to or from ``device``, in order.

    Messages to the phone go through a ``Device`` rebuilt from the copy (``Device.from_dict``),
    exactly as the phone would decrypt them, but for one check of the phone's that no key makes: a
    message the phone refuses for its sender's identity key (``UntrustedIdentity``: it decrypted) is
    read, the copy taking the new key as a user approving it would. Messages from the phone are tried on the sending
    chains the copy holds, run forward. Every "opened" is a real decryption; every reason is read
    off the copy's state (or, for keys deleted before the seizure, when the phone decrypted it).
    """
    copy = Device.from_dict(state, rng=rng)
    me = copy.address
    he = copy.config.header_encryption
    # What the seizure took, read from a second, untouched copy.
    seized = Device.from_dict(state, rng=rng)
    held = seized.held_sessions()
    seized_keys = {k for _p, s in held if (k := s.ratchet.ratchet_key) is not None}
    # the receiving chains, per peer, whose chain keys the seizure took
    seized_chains: dict[PeerAddress, set[bytes]] = {}
    for p, s in held:
        seized_chains.setdefault(p, set()).update(s.ratchet.receiving_chains())
    chains: dict[bytes, SendingChain] = {}
    for _p, s in held:
        chain = s.ratchet.sending_chain()
        if chain is not None:
            chains[chain.ratchet_key] = chain
    seen: set[tuple[int | None, str, int]] = set()
    rows: list[dict[str, Any]] = []
    for c in captured:
        incoming = c.recipient == me
        if not incoming and c.sender != f"{me.account}/{me.device}":
            continue
        key = (c.message, c.sender, c.recipient.device)
        if c.message is None or key in seen:
            continue  # a duplicated send: the first copy is the one that counts
        seen.add(key)
        before = c.time < seized_at
        t_dec = delivered.get(c.message) if incoming else None
        when = "before the seizure" if before else "after the seizure"
        if before and incoming and (t_dec is None or t_dec >= seized_at):
            when = "before the seizure, still in flight"
        row: dict[str, Any] = {
            "message": c.message,
            "direction": "to the phone" if incoming else "from the phone",
            "peer": c.sender if incoming else f"{c.recipient.account}/{c.recipient.device}",
            "accepted": round(c.time, 3),
            "when": when,
            "sealed": c.sealed,
        }
        if he:
            row.update(opened=False, why="header encryption: not analysed")
        elif incoming:
            row.update(
                _try_incoming(
                    copy,
                    c,
                    seized_at,
                    delivered.get(c.message),
                    seized_keys,
                    seized_chains,
                    trust_root,
                    epoch,
                    padding,
                )
            )
        else:
            row.update(_try_outgoing(copy, c, before, chains, trust_root, epoch, padding))
        text = row.pop("_text", None)
        row["text_matches"] = text is not None and text == texts.get(c.message)
        row["opened_text"] = text
        if incoming:
            row["decrypted_on_phone"] = None if t_dec is None else round(t_dec, 3)
        rows.append(row)
    opened = [r["message"] for r in rows if r["opened"]]
    decrypted_before = [
        r["message"]
        for r in rows
        if r.get("decrypted_on_phone") is not None and r["decrypted_on_phone"] < seized_at
    ]
    holdings = seized.holdings()
    return {
        "device": device,
        "seized_at": seized_at,
        "copied": {
            "sessions": holdings["sessions"],
            "inactive_sessions": holdings["inactive_sessions"],
            "skipped_message_keys": holdings["skipped_message_keys"],
            "earlier_receiving_chain_keys": holdings["earlier_receiving_chain_keys"],
            "one_time_prekeys": holdings["one_time_prekeys"],
            "kem_prekeys": holdings["kem_prekeys"],
        },
        "capture": "every envelope to or from the phone the relay accepted, from the start of the run",
        "messages": len(rows),
        "opened": opened,
        "decrypted_before_seizure": decrypted_before,
        "opened_of_decrypted_before_seizure": [m for m in decrypted_before if m in opened],
        "in_flight_at_seizure": [
            r["message"] for r in rows if r["when"] == "before the seizure, still in flight"
        ],
        "rows": rows,
    }


def _shown(plaintext: bytes, padding: str) -> str:
    """A decrypted plaintext as its text: the phones' padding (clients.agent.pad) removed."""
    with contextlib.suppress(DecryptionError):  # not padded as the phones pad: shown as it is
        plaintext = unpad(plaintext, padding)
    return plaintext.decode("utf-8", "replace")


def _try_incoming(
    copy: Device,
    c: Captured,
    seized_at: float,
    decrypted_at: float | None,
    seized_keys: set[bytes],
    seized_chains: dict[PeerAddress, set[bytes]],
    trust_root: bytes,
    epoch: float,
    padding: str,
) -> dict[str, Any]:
    body = _escrow.strip(c.body)
    if c.sealed:
        try:
            certificate, inner = sealed.open_envelope(
                copy.secrets.identity, body, trust_root, int(c.time + epoch)
            )
        except DecryptionError:
            return {"opened": False, "why": "the sealed layer did not open with the seized identity key"}
        peer = PeerAddress(certificate.sender, certificate.device)
    else:
        sender, _, number = c.sender.partition("/")
        peer, inner = PeerAddress(sender, int(number)), body
    try:
        initial, message = parse_ciphertext(inner)
    except DecryptionError:
        return {"opened": False, "why": "not a message the phone could parse"}
    header = parse_header(message)
    assert header is not None
    how = _how(copy, peer, initial, header, seized_keys, seized_chains)
    try:
        text: str | None = _shown(copy.decrypt(peer, inner), padding)
    except DecryptionError:
        text = None
    except UntrustedIdentity as refused:
        # It decrypted (on a trial copy) and the phone refuses it for its identity key: a check of the
        # phone's, which the agency holding the copy need not make. It takes the new key, as the user
        # would by approving it, and reads the message (and the later ones of that session).
        copy.identities.approve(peer, refused.change.new)
        return {
            "opened": True,
            "why": _untrusted(refused, peer),
            "_text": _shown(copy.decrypt(peer, inner), padding),
        }
    if text is not None:
        why = {
            "skipped": "its key was in the phone's store of skipped message keys (it had not arrived yet)",
            "same_chain": "on a receiving chain whose chain key the seizure copied (the current one, or one "
            "of the four before it a phone keeps, as libsignal does): the copied chain key runs forward to it",
            "derived_chain": "on the peer's next chain, which the copy derived from the seized ratchet key",
            "new_chain_seized_key": "the peer's next DH ratchet step answered the phone's ratchet key, whose "
            "private half was seized: the copy derives the new chain too",
            "new_session": "a new session, from prekeys the seizure copied",
        }.get(how, "the seized state opened it")
        return {"opened": True, "why": why, "_text": text}
    if decrypted_at is not None and decrypted_at < seized_at:
        why = (
            f"key deleted after decryption: the phone decrypted it at {_clock(decrypted_at)}, before the "
            "seizure, and forgot the key (forward secrecy)"
        )
    elif how == "used":
        why = "key deleted after decryption: that chain had already moved past it"
    elif how == "new_chain_fresh_key":
        why = (
            "after the next DH ratchet step: the peer's chain answers a ratchet key the phone generated after "
            "the seizure (post-compromise security)"
        )
    else:
        why = "no key for it in the seized state"
    return {"opened": False, "why": why}


def _untrusted(refused: UntrustedIdentity, peer: PeerAddress) -> str:
    """Why a message the phone refuses for its sender's identity key opened all the same."""
    change = refused.change
    rule = (
        "the user had verified the safety number of the key it replaces"
        if change.was_verified
        else "the phone's identity policy ('block') refuses a changed key"
    )
    return (
        f"the phone refuses it for its sender's identity key, not for want of a key: "
        f"{peer.account}/{peer.device} presents another identity key than the one the phone pinned, and "
        f"{rule} until the user approves the new one; the seized state decrypts it, and the copy, "
        "which need not wait for the user, takes the new key and reads it"
    )


def _how(
    copy: Device,
    peer: PeerAddress,
    initial: Any,
    header: MessageHeader,
    seized_keys: set[bytes],
    seized_chains: dict[PeerAddress, set[bytes]],
) -> str:
    """What the copy's state says about a message before it tries it."""
    sessions = copy.sessions_with(peer)
    if initial is not None and not any(s.made_by(initial) for s in sessions):
        return "new_session"
    if any(s.ratchet.has_skipped_key(header) for s in sessions):
        return "skipped"
    for s in sessions:
        position = s.ratchet.receiving_position(header)
        if position == "behind":
            return "used"
        if position in ("ahead", "earlier"):  # (the current receiving chain, or one kept before it)
            return "same_chain" if header.dh in seized_chains.get(peer, ()) else "derived_chain"
    if any(s.ratchet.ratchet_key in seized_keys for s in sessions):
        return "new_chain_seized_key"
    return "new_chain_fresh_key"


def _try_outgoing(
    copy: Device,
    c: Captured,
    before: bool,
    chains: dict[bytes, SendingChain],
    trust_root: bytes,
    epoch: float,
    padding: str,
) -> dict[str, Any]:
    body = _escrow.strip(c.body)
    if c.sealed:
        try:
            sealed.open_envelope(copy.secrets.identity, body, trust_root, int(c.time + epoch))
        except DecryptionError:
            return {
                "opened": False,
                "why": "sealed to the recipient's identity key, which the seizure did not copy",
            }
    try:
        _initial, message = parse_ciphertext(body)
    except DecryptionError:
        return {"opened": False, "why": "not a message the phone could parse"}
    header = parse_header(message)
    assert header is not None
    chain = chains.get(header.dh)
    if chain is not None:
        text = chain.open(message)
        if text is not None:
            return {
                "opened": True,
                "why": "on the phone's own sending chain the seizure copied: the chain key runs forward to it",
                "_text": _shown(text, padding),
            }
        return {
            "opened": False,
            "why": "sent before the seizure: the sending chain had already moved past it",
        }
    if before:
        return {
            "opened": False,
            "why": "sent before the seizure on an earlier sending chain, whose keys are gone",
        }
    return {
        "opened": False,
        "why": "after the next DH ratchet step: the phone's new sending chain comes from a private key it "
        "generated after the seizure (post-compromise security)",
    }
