"""Sessions between devices: X3DH/PQXDH to start, the Double Ratchet after, one per peer device.

A ``Device`` is the phone's protocol state, sans-IO: it makes bundles to publish, starts
sessions from fetched bundles, and turns plaintexts into ciphertexts and back. It never sends
anything itself; the simulator or a trio connection carries the bytes.

Ciphertext framing: ``clients.framing`` (a normal message, or a prekey message carrying the X3DH
header); ``parse_ciphertext`` is re-exported here.

A device made with ``pq=True`` (the default) starts sessions with PQXDH and accepts only PQXDH
prekey messages: one without the KEM prekey id and ciphertext is refused like any undecryptable
message, so that an attacker cannot downgrade its sessions to X3DH by stripping them. A ``pq=False``
device is one of the transition: it publishes no KEM prekey and accepts X3DH, and it starts a
session with PQXDH when the bundle carries a KEM prekey and with X3DH when it carries none (as
Signal's clients did while PQXDH rolled out in 2023). X3DH on a bundle with a KEM prekey would be
refused at the other end (its device runs PQXDH only), the first messages lost.

Alice sends prekey messages until she has decrypted Bob's first reply (X3DH §3.3: "Alice may
continue using that initial ciphertext… until receiving a response"), as libsignal does.

Like Sesame (rev 2), a device keeps one session per peer device. A prekey message for a session
it already holds (same ephemeral key) goes to that session; a new one replaces it once it
decrypts.

Under a key-escrow mandate (``Device.escrow``, see ``clients.escrow``) every ciphertext the
device sends is wrapped in an escrow frame carrying a copy of its message key sealed to the
escrow agent; every device strips that frame before decrypting, whoever sent it.

Identity keys are pinned per peer address from first contact (``clients.identity``): a bundle
or a prekey message presenting another key for a known address is an ``IdentityChanged``,
accepted with a warning or refused, by the device's policy, never a silent replacement. A prekey
message made without a one-time prekey cannot be replayed (under its own or another address):
the device remembers the base keys it has accepted under each signed prekey for as long as it
holds that signed prekey, as libsignal does.

``Device.to_dict`` is the device's whole protocol state as plain data (identity, prekey
secrets, every session): what a forensic copy of the phone takes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

from relaysim.clients import _primitives as _p
from relaysim.clients import escrow as _escrow
from relaysim.clients import sealed, spec
from relaysim.clients.errors import DecryptionError, SealedSenderSelfSend, UsageError
from relaysim.clients.framing import (
    MESSAGE_PREFIX,
    TYPE_MESSAGE,
    TYPE_PREKEY,
    frame_ciphertext,
    parse_ciphertext,
)
from relaysim.clients.identity import IdentityStore, PeerAddress
from relaysim.clients.keys import (
    IdentityKeyPair,
    KemPreKey,
    KemPreKeys,
    OneTimePreKeys,
    PreKeyBundle,
    PreKeySecrets,
    SignedPreKey,
    encode_kem_public_key,
)
from relaysim.clients.ratchet import DEFAULT_CONFIG, DoubleRatchet, RatchetConfig, UsedKey, ratchet_step_ahead
from relaysim.clients.x3dh import InitialMessage, KeyAgreement, initiate, respond

__all__ = ["TYPE_MESSAGE", "TYPE_PREKEY", "Device", "PeerAddress", "Session", "parse_ciphertext"]

RNG = Callable[[int], bytes]
# Inactive sessions kept per peer device (Sesame §3.1 keeps "zero or more inactive sessions";
# the bound is ours, so a peer cannot make a device keep an unbounded number).
MAX_INACTIVE_SESSIONS = 8
# How many of a peer's sessions a message without an X3DH header is tried against: the active one
# and the newest inactive ones (Sesame §3 says try them; it sets no bound). A forged message then
# costs the recipient at most this many trial decryptions, each at most one X25519 exchange and
# RatchetConfig.max_skip chain steps, instead of one per held session (1 + MAX_INACTIVE_SESSIONS).
# Older inactive sessions are kept (a copy of the phone still holds them) but no longer tried.
MAX_TRIAL_DECRYPTIONS = 3
_DEVICE_STATE_VERSION = 2
_READABLE_STATE_VERSIONS = (1, 2)  # version 1: no pinned identities or seen base keys yet


def remembered(initial: InitialMessage) -> InitialMessage:
    """What Bob keeps of the header that made a session: all of it but the 1,568-byte ML-KEM
    ciphertext, of which a SHA-256 digest is enough to know a repeat (it is never sent again; with
    hundreds of thousands of sessions in a simulation, the ciphertexts were most of their memory)."""
    ct = initial.kem_ciphertext
    if ct is None or len(ct) <= 32:
        return initial
    return InitialMessage(
        initial.identity_key,
        initial.ephemeral_key,
        initial.signed_prekey_id,
        initial.one_time_prekey_id,
        initial.kem_prekey_id,
        hashlib.sha256(ct).digest(),
    )


class Session:
    """One Double Ratchet session with one peer device, and the X3DH header still to attach."""

    __slots__ = ("initial", "peer_identity", "ratchet")

    def __init__(self, ratchet: DoubleRatchet, peer_identity: bytes, initial: InitialMessage | None) -> None:
        self.ratchet = ratchet
        self.peer_identity = peer_identity
        # Alice: the InitialMessage to attach until Bob answers. Bob: the one that made this session
        # (``remembered``: its ML-KEM ciphertext as a digest), so a repeat of it finds the session
        # instead of running X3DH again (``made_by``).
        self.initial = initial

    def made_by(self, initial: InitialMessage) -> bool:
        """Whether ``initial`` is the X3DH header this session was made from (or attaches): equal
        to it, or to ``remembered(initial)`` (compared field by field, without making that copy)."""
        mine = self.initial
        if mine is None or mine.ephemeral_key != initial.ephemeral_key:
            return False  # (a fresh EK_A per header: the common answer, at once)
        if mine == initial:
            return True
        ct = initial.kem_ciphertext
        return (
            ct is not None
            and len(ct) > 32
            and mine.kem_ciphertext == hashlib.sha256(ct).digest()
            and mine.identity_key == initial.identity_key
            and mine.signed_prekey_id == initial.signed_prekey_id
            and mine.one_time_prekey_id == initial.one_time_prekey_id
            and mine.kem_prekey_id == initial.kem_prekey_id
        )

    @property
    def awaiting_reply(self) -> bool:
        return self.initial is not None and self.ratchet.cks is not None and self.ratchet.ckr is None

    def encrypt(self, plaintext: bytes) -> bytes:
        ratchet = self.ratchet
        body = ratchet.encrypt(plaintext)
        initial = self.initial
        # ``_frame``, written out: after an encryption the sending chain exists, so awaiting a reply
        # is holding an X3DH header with no receiving chain yet
        if initial is None or ratchet.ckr is not None:
            return MESSAGE_PREFIX + body
        return frame_ciphertext(initial, body)

    def encrypt_keeping_key(self, plaintext: bytes) -> tuple[bytes, UsedKey]:
        """``encrypt``, and a copy of the message key it used (for ``clients.escrow``)."""
        body, used = self.ratchet.encrypt_keeping_key(plaintext)
        return self._frame(body), used

    def _frame(self, body: bytes) -> bytes:
        return frame_ciphertext(self.initial if self.awaiting_reply else None, body)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ratchet": self.ratchet.to_dict(),
            "peer_identity": self.peer_identity,
            "initial": None if self.initial is None else self.initial.to_wire(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, rng: RNG = os.urandom) -> Session:
        initial = None if d["initial"] is None else InitialMessage.from_wire(d["initial"])
        return cls(DoubleRatchet.from_dict(d["ratchet"], rng=rng), d["peer_identity"], initial)


def _trial(ratchet: DoubleRatchet) -> DoubleRatchet:
    """A copy of ``ratchet`` to decrypt with when the session's identity key is one the device's
    policy refuses (``IdentityStore.blocks``): a message that authenticates on it is then refused
    (``UntrustedIdentity``, reported) with the session as it was, so that it still reads once the
    user approves the key. (Decrypting on the session itself would use its message key up, and a
    failed decryption must change nothing: Double Ratchet §3.5.) The copy draws no randomness: the
    key pair a DH ratchet step on it makes is thrown away with it."""
    return DoubleRatchet.from_dict(ratchet.to_dict(), rng=bytes)


def _header_keys(config: RatchetConfig, agreement: KeyAgreement) -> dict[str, bytes]:
    if not config.header_encryption:
        return {}
    hka, nhkb = agreement.header_keys()
    return {"shared_hka": hka, "shared_nhkb": nhkb}


class Device:
    """A phone's protocol state: identity, prekeys, and one session per peer device."""

    def __init__(
        self,
        account: str,
        device_id: int = 1,
        *,
        rng: RNG = os.urandom,
        pq: bool = True,
        config: RatchetConfig = DEFAULT_CONFIG,
        identity: IdentityKeyPair | None = None,
        deterministic: bool = False,
        identity_policy: str = "warn",
    ) -> None:
        self.address = PeerAddress(account, device_id)
        self.rng = _p.require_key_source(rng, f"Device({account!r}, {device_id})")
        self.pq = pq
        # Draw every random value from ``rng``, the ML-KEM encapsulation's too (see x3dh.initiate).
        self.deterministic = deterministic
        self.config = config
        self.secrets = PreKeySecrets(identity or IdentityKeyPair.generate(rng))
        self.sessions: dict[PeerAddress, Session] = {}  # the active session per peer device
        self.inactive: dict[PeerAddress, list[Session]] = {}  # newest first
        # Set when a key-escrow mandate is in force: every message key is also sealed to it.
        self.escrow: _escrow.EscrowPublicKey | None = None
        # Each peer device's identity key from first contact, and what the user verified.
        self.identities = IdentityStore(identity_policy)
        # Base keys (EK_A) of accepted prekey messages made without a one-time prekey, per signed
        # prekey id: a replay of one, under any address, is refused (libsignal keeps these too).
        self.seen_base_keys: dict[int, set[bytes]] = {}

    @property
    def identity_key(self) -> bytes:
        return self.secrets.identity.public

    # --- prekeys ------------------------------------------------------------------------

    def generate_prekeys(self, one_time: int = 10, kem_one_time: int = 10) -> PreKeyBundle:
        """Make a signed prekey, one-time prekeys, one-time KEM prekeys and a last-resort KEM prekey."""
        s = self.secrets
        if s.current_signed_id < 0:
            s.new_signed_prekey(self.rng)
        s.new_one_time_prekeys(one_time, self.rng)
        if self.pq:
            s.new_kem_prekeys(kem_one_time, rng=self.rng)
            if not s.kem.any_last_resort():
                s.new_kem_prekeys(1, last_resort=True, rng=self.rng)
        return s.bundle(kem=self.pq)

    # --- sessions -----------------------------------------------------------------------

    def start_session(self, peer: PeerAddress, bundle: PreKeyBundle) -> None:
        """X3DH/PQXDH as Alice, from a bundle the relay handed out. Raises BundleError if it is forged,
        ``UntrustedIdentity`` if it carries another identity key than the one pinned for ``peer``
        and the policy (or a verification) blocks it."""
        self.identities.check(peer, bundle.identity_key, "bundle")
        agreement, initial = initiate(
            self.secrets.identity.pair,
            bundle,
            pq=self.pq or bundle.kem_prekey is not None,  # (a pq=False device: PQXDH when it can)
            rng=self.rng,
            deterministic_kem=self.deterministic,
        )
        config = self.config
        if config.header_encryption:
            ratchet = DoubleRatchet.init_alice(
                agreement.sk,
                bundle.signed_prekey.public,
                agreement.ad,
                config=config,
                rng=self.rng,
                **_header_keys(config, agreement),
            )
        else:
            ratchet = DoubleRatchet.init_alice(
                agreement.sk, bundle.signed_prekey.public, agreement.ad, config=config, rng=self.rng
            )
        self._activate(peer, Session(ratchet, bundle.identity_key, initial))
        self.identities.pin(peer, bundle.identity_key)

    def has_session(self, peer: PeerAddress) -> bool:
        return peer in self.sessions

    def encrypt(self, peer: PeerAddress, plaintext: bytes) -> bytes:
        session = self.sessions.get(peer)
        if session is None:
            session = self._session(peer)  # (raises the UsageError)
        if self.escrow is None:
            return session.encrypt(plaintext)
        ciphertext, used = session.encrypt_keeping_key(plaintext)
        return self.escrow.wrap(ciphertext, used, rng=self.rng)

    def _session(self, peer: PeerAddress) -> Session:
        session = self.sessions.get(peer)
        if session is None:
            raise UsageError(
                f"no session with {peer.account}.{peer.device}: fetch a bundle and start_session()"
            )
        return session

    def decrypt(self, peer: PeerAddress, ciphertext: bytes) -> bytes:
        """Decrypt a message from ``peer``. Every failure is ``DecryptionError``; state is unchanged then.
        A message that decrypts, on a session (or making one) whose identity key the device's policy
        refuses, raises ``UntrustedIdentity`` instead, the state as unchanged (the change reported).

        As in Sesame (§3), a message may belong to the active session or to an inactive one (both
        phones started a session at once, each answering the other's); the session that decrypts
        it becomes the active one. An escrow frame around the ciphertext is stripped first.
        """
        return self._decrypt(peer, ciphertext, None)

    def _decrypt(self, peer: PeerAddress, ciphertext: bytes, identity: bytes | None) -> bytes:
        if ciphertext and ciphertext[0] == _escrow.ESCROW_TAG:  # (``strip``'s test, without its two calls)
            ciphertext = _escrow.strip(ciphertext)
        initial, body = parse_ciphertext(ciphertext)
        if initial is None:
            active = self.sessions.get(peer)
            if active is not None and (identity is None or active.peer_identity == identity):
                # The common case first: the active session reads it (no list of candidates to make,
                # nothing to activate). Otherwise the same trials as below, the active one skipped.
                ratchet = active.ratchet
                waiting = active.initial is not None and ratchet.cks is not None and ratchet.ckr is None
                blocked = self.identities.blocks(peer, active.peer_identity)
                try:
                    plaintext = (_trial(ratchet) if blocked else ratchet).decrypt(body)
                except DecryptionError:
                    pass
                else:
                    key, identities = active.peer_identity, self.identities
                    if identities.pinned(peer) != key:  # (the pinned key: nothing to check or pin)
                        identities.check(peer, key, "message")
                        identities.pin(peer, key)
                    if waiting:
                        active.initial = None  # Alice: Bob has answered; stop attaching the X3DH header
                    return plaintext
            # (the active session, first of the candidates, was tried above, or cannot be for want of
            # the sealed certificate's identity key)
            for session in self._candidates(peer)[1 if active is not None else 0 : MAX_TRIAL_DECRYPTIONS]:
                if identity is not None and session.peer_identity != identity:
                    continue  # sealed: only a session with the certificate's identity key may decrypt it
                waiting = session.awaiting_reply
                ratchet = session.ratchet
                try:
                    if self.identities.blocks(peer, session.peer_identity):
                        ratchet = _trial(ratchet)
                    plaintext = ratchet.decrypt(body)
                except DecryptionError:
                    continue
                # an older session with another identity key than the pinned one (the key changed
                # since) speaks again: that is a change too, reported (or refused) like any other
                self.identities.check(peer, session.peer_identity, "message")
                self.identities.pin(peer, session.peer_identity)
                if waiting:
                    session.initial = None  # Alice: Bob has answered; stop attaching the X3DH header
                self._activate(peer, session)
                return plaintext
            raise DecryptionError()
        if peer in self.sessions or peer in self.inactive:
            for session in self._candidates(peer):
                if session.made_by(initial):
                    plaintext = session.ratchet.decrypt(body)
                    self._activate(peer, session)
                    return plaintext
        # A new session from a prekey message (X3DH §3.4, Bob's side).
        replayable = initial.one_time_prekey_id is None
        if replayable and initial.ephemeral_key in self.seen_base_keys.get(initial.signed_prekey_id, ()):
            raise DecryptionError()  # a replay: this base key already made a session
        agreement, spk_pair = respond(self.secrets, initial, pq=self.pq)  # pq: PQXDH only, no X3DH
        config = self.config
        if config.header_encryption:
            ratchet = DoubleRatchet.init_bob(
                agreement.sk,
                spk_pair,
                agreement.ad,
                config=config,
                rng=self.rng,
                **_header_keys(config, agreement),
            )
        else:
            ratchet = DoubleRatchet.init_bob(
                agreement.sk, spk_pair, agreement.ad, config=config, rng=self.rng
            )
        plaintext = ratchet.decrypt(body)
        # Only now that it authenticated: is this the identity key pinned for ``peer``? (Checked
        # after decryption so that a forgery cannot raise a notice; a refusal changes nothing.)
        self.identities.check(peer, initial.identity_key, "message")
        self.identities.pin(peer, initial.identity_key)
        if replayable:
            self._remember_base_key(initial.signed_prekey_id, initial.ephemeral_key)
        # Burn the one-time prekeys it used (X3DH §3.4).
        opk_id = initial.one_time_prekey_id
        if opk_id is not None:
            one_time = self.secrets.one_time
            if opk_id in one_time:  # (``pop`` would make the pair again, to throw it away)
                del one_time[opk_id]
        if initial.kem_prekey_id is not None and self.secrets.kem.last_resort(initial.kem_prekey_id) is False:
            del self.secrets.kem[initial.kem_prekey_id]
        self._activate(peer, Session(ratchet, initial.identity_key, remembered(initial)))
        return plaintext

    def exchanges_ahead(
        self, peer: PeerAddress, ciphertext: bytes, peek: Callable[[int], bytes] | None = None
    ) -> list[tuple[Any, ...]]:
        """The costliest steps ``decrypt(peer, ciphertext)`` would take if it ran now, as jobs for
        ``clients.ahead.compute_ahead``, so that a simulation's worker can compute them on another core
        while the message travels: for a prekey message, X3DH's four DHs on Bob's side (§3.3) and
        PQXDH's decapsulation; for any message, the DH ratchet step's two DHs and the new pair's
        public key (``DoubleRatchet.exchanges_ahead``; ``peek(n)``: the n bytes the device's RNG will
        give next, without drawing them, if the caller can tell). A guess from the state now: it
        decrypts nothing, changes nothing, raises nothing, and a wrong one only costs the worker's
        time."""
        try:
            if ciphertext and ciphertext[0] == _escrow.ESCROW_TAG:
                ciphertext = _escrow.strip(ciphertext)
            initial, body = parse_ciphertext(ciphertext)
        except (DecryptionError, ValueError):
            return []
        he = self.config.header_encryption
        if initial is None:
            session = self.sessions.get(peer)
            if session is None:
                return []
            return session.ratchet.exchanges_ahead(body, peek)
        for session in self._candidates(peer) if (peer in self.sessions or peer in self.inactive) else ():
            if session.made_by(initial):
                return session.ratchet.exchanges_ahead(body, peek)
        if self.pq and initial.kem_ciphertext is None:
            return []  # X3DH to a PQXDH device: ``respond`` refuses it before any DH
        secrets = self.secrets
        signed = secrets.signed.get(initial.signed_prekey_id)
        if signed is None:
            return []
        spk, ik, ek = signed[0], secrets.identity.pair, initial.ephemeral_key
        jobs: list[tuple[Any, ...]] = [
            (_p.AHEAD_DH, spk.private, initial.identity_key),
            (_p.AHEAD_DH, ik.private, ek),
            (_p.AHEAD_DH, spk.private, ek),
        ]
        if initial.one_time_prekey_id is not None:
            opk = secrets.one_time.get(initial.one_time_prekey_id)
            if opk is not None:
                jobs.append((_p.AHEAD_DH, opk.private, ek))
        kem = secrets.kem
        if initial.kem_prekey_id is not None and initial.kem_ciphertext is not None:
            seed = kem.seed(initial.kem_prekey_id)
            # (a last-resort key a cache keeps is decapsulated with the kept key, not from the seed)
            if seed is not None and (kem.cache is None or kem.last_resort(initial.kem_prekey_id) is False):
                jobs.append((_p.AHEAD_KEM, seed, bytes(initial.kem_ciphertext)))
        return jobs + ratchet_step_ahead(body, spk, None, peek, he)

    def takes_one_time_prekey(self, ciphertext: bytes) -> bool:
        """Whether ``decrypt`` of ``ciphertext`` would take one of the one-time prekeys this device
        holds (a prekey message naming it: X3DH §3.3, Bob deletes it), for
        ``DeviceAgent.top_up_ahead``. A guess like ``exchanges_ahead``: it checks nothing else."""
        try:
            if ciphertext and ciphertext[0] == _escrow.ESCROW_TAG:
                ciphertext = _escrow.strip(ciphertext)
            initial, _body = parse_ciphertext(ciphertext)
        except (DecryptionError, ValueError):
            return False
        return initial is not None and initial.one_time_prekey_id in self.secrets.one_time

    def session_exchanges_ahead(
        self, bundle: PreKeyBundle, peek: Callable[[int, int], bytes] | None = None, first: int = 0
    ) -> tuple[list[tuple[Any, ...]], int]:
        """The costliest steps ``start_session(peer, bundle)`` would take if it ran now (X3DH §3.3 on
        Alice's side, PQXDH's encapsulation, the Double Ratchet's first DH), as jobs for
        ``clients.ahead.compute_ahead``, and how many draws of the device's RNG it makes: the bundle's
        signature checks, DH(IK_A, SPK_B), PQXDH's encapsulation, and — given ``peek(n, k)``, the n
        bytes of the RNG's k-th draw from now, ``first`` the first of this session's — the key pairs
        for EK_A and the ratchet and the DHs with them. A guess, like ``exchanges_ahead``: it
        checks, changes and raises nothing."""
        spk, opk, kem, ik = (
            bundle.signed_prekey,
            bundle.one_time_prekey,
            bundle.kem_prekey,
            bundle.identity_key,
        )
        pq = kem is not None  # (start_session: PQXDH on a bundle with a KEM prekey, whatever self.pq)
        # the draws: EK_A; with a deterministic encapsulation, its randomness m; the ratchet's pair
        draws = 3 if pq and self.deterministic else 2
        try:
            jobs: list[tuple[Any, ...]] = [
                (_p.AHEAD_VERIFY, ik, spec.encode_public_key(spk.public), spk.signature)
            ]
        except ValueError:
            return [], draws
        if kem is not None:
            jobs.append((_p.AHEAD_VERIFY, ik, encode_kem_public_key(kem.public), kem.signature))
        jobs.append((_p.AHEAD_DH, self.secrets.identity.pair.private, spk.public))
        if pq and not self.deterministic:
            assert kem is not None
            jobs.append((_p.AHEAD_ENCAPS, kem.public, None))
        if peek is not None:
            ek = peek(32, first)
            jobs += [(_p.AHEAD_BASE, ek), (_p.AHEAD_DH, ek, ik), (_p.AHEAD_DH, ek, spk.public)]
            if opk is not None:
                jobs.append((_p.AHEAD_DH, ek, opk.public))
            if pq and self.deterministic:
                assert kem is not None
                jobs.append((_p.AHEAD_ENCAPS, kem.public, peek(32, first + 1)))
            pair = peek(32, first + draws - 1)
            jobs += [(_p.AHEAD_BASE, pair), (_p.AHEAD_DH, pair, spk.public)]
        return jobs, draws

    def replayed(self, peer: PeerAddress, ciphertext: bytes, identity: bytes | None = None) -> bool:
        """Whether ``ciphertext`` from ``peer`` is on a session this device holds at a message number
        whose key that session has already used (``DoubleRatchet.already_used``), or is a prekey
        message whose base key already made a session: a second copy of a message read already, as
        far as its header tells. Read only, and asked only of a message ``decrypt`` refused; the
        sessions are the ones ``decrypt`` tries (``identity``: a sealed message's, see ``open_sealed``)."""
        try:
            initial, body = parse_ciphertext(_escrow.strip(ciphertext))
        except DecryptionError:
            return False
        if initial is None:
            sessions = self._candidates(peer)[:MAX_TRIAL_DECRYPTIONS]
            return any(
                s.ratchet.already_used(body)
                for s in sessions
                if identity is None or s.peer_identity == identity
            )
        if identity is not None and initial.identity_key != identity:
            return False
        for session in self._candidates(peer):
            if session.made_by(initial):
                return session.ratchet.already_used(body)
        return initial.one_time_prekey_id is None and initial.ephemeral_key in self.seen_base_keys.get(
            initial.signed_prekey_id, ()
        )

    def sealed_replayed(self, envelope: bytes, trust_root: bytes, now: int) -> bool:
        """``replayed`` for a sealed envelope ``open_sealed`` refused: its outer layer and certificate
        must open and check (as there), then the inner message is asked about. Read only."""
        try:
            certificate, inner = sealed.open_envelope(
                self.secrets.identity, _escrow.strip(envelope), trust_root, now, local=self.address
            )
        except (DecryptionError, SealedSenderSelfSend):  # (a self-send is read by no session here)
            return False
        peer = PeerAddress(certificate.sender, certificate.device)
        return self.replayed(peer, inner, certificate.identity_key)

    def _remember_base_key(self, signed_prekey_id: int, base_key: bytes) -> None:
        # Kept for the signed prekey's lifetime: drop the sets of signed prekeys no longer held.
        for gone in [i for i in self.seen_base_keys if i not in self.secrets.signed]:
            del self.seen_base_keys[gone]
        self.seen_base_keys.setdefault(signed_prekey_id, set()).add(base_key)

    def _candidates(self, peer: PeerAddress) -> list[Session]:
        active = self.sessions.get(peer)
        inactive = self.inactive.get(peer, [])
        return inactive if active is None else [active, *inactive]

    def _activate(self, peer: PeerAddress, session: Session) -> None:
        """Make ``session`` the active one for ``peer``; the previous active one becomes inactive."""
        previous = self.sessions.get(peer)
        if previous is session:
            return
        if previous is None and peer not in self.inactive:  # a first session with ``peer``
            self.sessions[peer] = session
            return
        inactive = [s for s in self.inactive.get(peer, []) if s is not session]
        if previous is not None:
            inactive.insert(0, previous)
        if inactive:
            self.inactive[peer] = inactive[:MAX_INACTIVE_SESSIONS]
        else:  # no empty list per peer (most have no inactive session): ~0.1 KiB per peer less
            self.inactive.pop(peer, None)
        self.sessions[peer] = session

    def sessions_with(self, peer: PeerAddress) -> list[Session]:
        """Every session held with ``peer``: the active one first, then the inactive ones, newest first."""
        return list(self._candidates(peer))

    def held_sessions(self) -> list[tuple[PeerAddress, Session]]:
        """Every session the device holds, active ones first: what a copy of the phone takes."""
        inactive = [(p, s) for p, xs in self.inactive.items() for s in xs]
        return [*self.sessions.items(), *inactive]

    def holdings(self) -> dict[str, int]:
        """How many of each kind of secret the device holds now: sessions (active and inactive), and,
        in all of them, the skipped message keys and the chain keys of the receiving chains before the
        current one (``earlier_receiving_chain_keys``: each session keeps up to four, as libsignal does,
        and each reads every later message of its chain: ``DoubleRatchet.receiving_chains``); prekeys."""
        held = self.held_sessions()
        return {
            "sessions": len(self.sessions),
            "inactive_sessions": len(held) - len(self.sessions),
            "skipped_message_keys": sum(len(s.ratchet.mkskipped) for _p, s in held),
            "earlier_receiving_chain_keys": sum(
                1 for _p, s in held for _c, _nr, ck in s.ratchet.old_chains if ck is not None
            ),
            "one_time_prekeys": len(self.secrets.one_time),
            "kem_prekeys": len(self.secrets.kem),
        }

    def peer_identity(self, peer: PeerAddress) -> bytes | None:
        session = self.sessions.get(peer)
        return None if session is None else session.peer_identity

    # --- sealed sender ------------------------------------------------------------------

    def seal(self, peer: PeerAddress, plaintext: bytes, certificate: bytes) -> bytes:
        """Encrypt on the session with ``peer``, then seal it with our sender certificate.

        Under escrow the frame goes around the sealed envelope, and the escrow record carries the
        ratchet message too: sealing hides it from everyone but the recipient, escrow agent included.
        """
        session = self._session(peer)
        if self.escrow is None:
            inner = session.encrypt(plaintext)
            return sealed.seal(self.secrets.identity, session.peer_identity, certificate, inner, rng=self.rng)
        inner, used = session.encrypt_keeping_key(plaintext)
        envelope = sealed.seal(self.secrets.identity, session.peer_identity, certificate, inner, rng=self.rng)
        return self.escrow.wrap(envelope, used, rng=self.rng, include_message=True)

    def open_sealed(self, envelope: bytes, trust_root: bytes, now: int) -> tuple[PeerAddress, bytes]:
        """Open a sealed envelope: (who sent it, per their verified certificate; the plaintext).

        The certificate's identity key must be the identity key of the session the inner message
        belongs to, so a sender cannot borrow someone else's certificate; a certificate naming this
        very device is a self-send, refused (``SealedSenderSelfSend``, libsignal's, no decryption
        failure: the envelope opened). Any failure is ``DecryptionError``, with the state unchanged.
        """
        envelope = _escrow.strip(envelope)
        certificate, inner = sealed.open_envelope(
            self.secrets.identity, envelope, trust_root, now, local=self.address
        )
        peer = PeerAddress(certificate.sender, certificate.device)
        initial, _body = parse_ciphertext(inner)
        if initial is not None and initial.identity_key != certificate.identity_key:
            raise DecryptionError()
        return peer, self._decrypt(peer, inner, certificate.identity_key)

    # --- state as data --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The whole protocol state as plain data (a copy: nothing in it is shared with the device)."""
        s = self.secrets
        c = self.config
        return {
            "v": _DEVICE_STATE_VERSION,
            "account": self.address.account,
            "device": self.address.device,
            "pq": self.pq,
            "deterministic": self.deterministic,
            "config": list(c.as_tuple()),
            "identity": s.identity.private,
            "signed": [
                [i, pair.private, spk.public, spk.signature] for i, (pair, spk) in sorted(s.signed.items())
            ],
            "current_signed_id": s.current_signed_id,
            "one_time": [[i, pair.private] for i, pair in sorted(s.one_time.items())],
            "kem": [
                [i, seed, k.public, k.signature, k.last_resort] for i, (seed, k) in sorted(s.kem.items())
            ],
            "next_id": s.next_id,
            "sessions": [[p.account, p.device, x.to_dict()] for p, x in sorted(self.sessions.items())],
            "inactive": [
                # every peer with a session, as when each held a list of inactive ones, empty or not
                [p.account, p.device, [x.to_dict() for x in self.inactive.get(p, [])]]
                for p in sorted(self.sessions.keys() | self.inactive.keys())
            ],
            "identities": self.identities.to_dict(),
            "seen_base_keys": [[i, sorted(ks)] for i, ks in sorted(self.seen_base_keys.items())],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, rng: RNG = os.urandom) -> Device:
        if d.get("v") not in _READABLE_STATE_VERSIONS:
            raise UsageError(f"unknown device state version {d.get('v')!r}")
        config = RatchetConfig.from_list(d["config"])
        device = cls(
            d["account"],
            d["device"],
            rng=rng,
            pq=d["pq"],
            config=config,
            identity=IdentityKeyPair(d["identity"]),
            deterministic=d["deterministic"],
        )
        s = device.secrets
        for i, private, public, signature in d["signed"]:
            s.signed[i] = (_p.x25519_pair_from_private(private), SignedPreKey(i, public, signature))
        s.current_signed_id = d["current_signed_id"]
        s.one_time = OneTimePreKeys({i: _p.x25519_pair_from_private(private) for i, private in d["one_time"]})
        s.kem = KemPreKeys(
            {i: (seed, KemPreKey(i, public, sig, last)) for i, seed, public, sig, last in d["kem"]}
        )
        s.next_id = d["next_id"]
        device.sessions = {PeerAddress(a, n): Session.from_dict(x, rng=rng) for a, n, x in d["sessions"]}
        device.inactive = {
            PeerAddress(a, n): [Session.from_dict(x, rng=rng) for x in xs] for a, n, xs in d["inactive"]
        }
        if "identities" in d:
            device.identities = IdentityStore.from_dict(d["identities"])
            device.seen_base_keys = {i: set(ks) for i, ks in d["seen_base_keys"]}
        else:  # version 1: pin what the sessions hold (the active session's key per peer)
            for peer, session in sorted(device.sessions.items()):
                device.identities.pin(peer, session.peer_identity)
        return device
