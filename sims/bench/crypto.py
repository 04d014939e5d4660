"""``relaysim bench crypto``: our Double Ratchet and session setup against a floor and two peers, in one run.

What is measured: all on the same 100-byte plaintext, µs per operation. In every one of --repeat
repeats each contender does its whole count (--messages or --setups) in --chunks slices that take
turns round-robin with the other contenders' slices, in an order rotated from repeat to repeat, so
that all of them share the machine's noise; each slice is one sample and a contender's figure is
the median of its repeat × chunks samples, which leaves out slices that another process preempted.
The garbage collector is off while the clock runs, as in ``timeit``; every slice checks the last
plaintext it decrypted.

* ratchet, one direction: Alice encrypts a message and Bob decrypts it, N times; µs per message
  (encrypt + decrypt). Contenders: ``clients.ratchet.DoubleRatchet``; the composed-primitive floor
  (the same ``clients.spec`` steps in a straight loop with no state machine: KDF_CK + header pack +
  ENCRYPT on one side, KDF_CK + DECRYPT on the other); PyPI ``doubleratchet`` 1.3.0 configured with
  the spec's recommended algorithms as docs/performance.md says; vodozemac's Olm session (Rust), when
  it is importable.
* ratchet, alternating senders: the sender changes every message, so every message carries a DH
  ratchet step. The floor adds one X25519 key generation, two X25519 and two KDF_RK per message.
* session setup: two devices whose keys and prekeys exist before the clock starts; timed: the
  initiator starts a session from the responder's bundle, encrypts a first message, the responder
  decrypts it, replies, and the initiator decrypts the reply. Ours with X3DH and with PQXDH
  (``clients.session.Device``, which also verifies the bundle's XEdDSA signatures), vodozemac's
  with an outbound session to a published one-time key and an inbound session from the prekey
  message. µs per setup. --setups is 200 by default, 20 to a slice: a slice's first set-up finds
  the caches as the other contenders' slices left them and pays ~0.5 ms to fill them again (on
  this machine kind), which 5 set-ups to a slice (the default before) spread at ~0.1 ms each,
  while the floor's parts, timed 50 calls to a slice in small loops, spread theirs to nothing:
  at 5 a slice X3DH read 1.17–1.22 × its floor on a quiet machine, at 20 1.08–1.10, the code and
  the floor the same.
* group message, sender keys against pairwise fan-out (issue #13 item 4): the sender's cost of one
  message to a group of 2, 10, 100 and 1,000 members (``--group-messages`` per repeat). With sender
  keys (``clients.groups.GroupKeys.encrypt``: one chain step, one AES-256-CBC encryption and one
  Ed25519 signature) the sender encrypts once whatever the group's size and the relay or the sender
  copies the same ciphertext to every member device; with pairwise fan-out (how groups worked before
  sender keys) it runs the Double Ratchet once per other member (``clients.ratchet``). µs per group
  message; each slice's last message is decrypted by one member, outside the per-member cost.
* where the time goes: the pieces of our one-direction path (KDF_CK, header pack, ENCRYPT and
  DECRYPT and their parts), each timed on its own in the same repeats; and for a session setup,
  how many X25519 generations and exchanges, XEdDSA verifications, ML-KEM operations and KDF
  calls (X3DH's KDF, KDF_RK, KDF_CK, and the two messages' ENCRYPT and DECRYPT) it makes
  (counted in one untimed run) times what each costs. That sum, slice by slice, is the
  protocol's own floor for a set-up, the row the set-up targets are judged against. After the
  repeats, one more pass of 4 × --setups set-ups (not judged) times every step where it runs
  (the "in situ" column), which splits what the floor leaves out in two: the steps costing more
  inside a set-up than in a loop of their own (the caches and branch predictors they find there
  are the rest of the set-up's), and the time outside every step (the Python around them).

Targets (docs/performance.md) are ratios, so they are judged on the ratio of
the medians measured side by side in this run (the median of the per-slice ratios is shown too):
one direction ≤ 1.15 × floor, ≤ 1.6 × vodozemac, ≥ 3.5 × faster than doubleratchet; alternating
≤ 1.15 × vodozemac, ≥ 2 × faster than doubleratchet; setup X3DH and PQXDH each ≤ 1.15 × the
protocol's own floor (vodozemac's set-up for information: Olm's is not the same work). --json FILE (or - for stdout) writes every sample, median, ratio and breakdown row;
--check exits 1 unless every target is met.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final, Protocol

from relaysim.clients import _primitives as _p
from relaysim.clients import spec
from relaysim.clients.keys import OneTimePreKey, PreKeyBundle
from relaysim.clients.ratchet import DEFAULT_CONFIG, HEADER_LEN, DoubleRatchet
from relaysim.clients.ratchet import HEADER as _HEADER  # the wire header: DHs public ‖ PN ‖ N
from relaysim.clients.session import Device
from relaysim.clients.x3dh import X3DH_INFO
from relaysim.sims.bench import harness
from relaysim.sims.numbers import state_bounds, whole_number

__all__ = ["RATIOS", "main", "run_benchmarks"]

MESSAGE_LEN = 100
MESSAGE = bytes(range(MESSAGE_LEN))  # the one plaintext every contender encrypts
ROOT_INFO = DEFAULT_CONFIG.root_info  # b"WhisperRatchet"
AEAD_INFO = DEFAULT_CONFIG.aead_info  # b"WhisperMessageKeys"
_ZERO32 = bytes(32)

ONE_DIRECTION = "one_direction"
ALTERNATING = "alternating"
SETUP = "setup"
BREAKDOWN = "breakdown"
GROUP = "group"
GROUP_SIZES = (2, 10, 100, 1_000)
_GROUP_ID = bytes(range(16))


def _check(plaintext: bytes) -> None:
    if plaintext != MESSAGE:
        raise harness.BenchError("a benchmarked decryption returned the wrong plaintext")


# --- contenders --------------------------------------------------------------------------------


class Runner(Protocol):
    def prepare(self, n: int) -> None:
        """Untimed work before up to ``n`` operations (fresh devices for session setup, for example)."""

    def run(self, n: int) -> None:
        """The timed work: the next ``n`` operations."""


class _Side(Protocol):
    def encrypt(self, plaintext: bytes) -> Any: ...

    def decrypt(self, message: Any) -> bytes: ...


class _NoPrepare:
    def prepare(self, n: int) -> None:
        pass


class OneDirection(_NoPrepare):
    """``sender`` encrypts and ``receiver`` decrypts, message after message; state carries over."""

    def __init__(self, sender: _Side, receiver: _Side) -> None:
        self.sender = sender
        self.receiver = receiver

    def run(self, n: int) -> None:
        encrypt, decrypt, pt = self.sender.encrypt, self.receiver.decrypt, MESSAGE
        out = b""
        for _ in range(n):
            out = decrypt(encrypt(pt))
        _check(out)


class Alternating(_NoPrepare):
    """The sender changes every message (a DH ratchet step each time); the turn carries over repeats."""

    def __init__(self, first: _Side, second: _Side) -> None:
        self.sender = first
        self.receiver = second

    def run(self, n: int) -> None:
        s, r, pt = self.sender, self.receiver, MESSAGE
        out = b""
        for _ in range(n):
            out = r.decrypt(s.encrypt(pt))
            s, r = r, s
        self.sender, self.receiver = s, r
        _check(out)


def _identity_ad() -> bytes:
    """X3DH §3.3 AD = Encode(IK_A) ‖ Encode(IK_B), 66 bytes, as a real session has."""
    return spec.encode_public_key(spec.generate_dh().public) + spec.encode_public_key(
        spec.generate_dh().public
    )


def _round_trip(a: _Side, b: _Side) -> None:
    """One message each way before timing, so that both sides are past their first message."""
    _check(b.decrypt(a.encrypt(MESSAGE)))
    _check(a.decrypt(b.encrypt(MESSAGE)))


def our_pair() -> tuple[DoubleRatchet, DoubleRatchet]:
    """Alice and Bob on ``clients.ratchet`` after one message each way."""
    sk, ad, bob_spk = os.urandom(32), _identity_ad(), spec.generate_dh()
    alice = DoubleRatchet.init_alice(sk, bob_spk.public, ad)
    bob = DoubleRatchet.init_bob(sk, bob_spk, ad)
    _round_trip(alice, bob)
    return alice, bob


class FloorOneDirection(_NoPrepare):
    """The composed floor, one direction: what a message costs in ``clients.spec`` steps alone."""

    def __init__(self) -> None:
        ck = os.urandom(32)
        self.cks = self.ckr = ck
        self.ns = 0
        self.public = spec.generate_dh().public
        self.ad = _identity_ad()

    def run(self, n: int) -> None:
        kdf_ck, encrypt, decrypt, pack = spec.kdf_ck, spec.encrypt, spec.decrypt, _HEADER.pack
        ad, info, public, pt = self.ad, AEAD_INFO, self.public, MESSAGE
        cks, ckr, ns = self.cks, self.ckr, self.ns
        out = b""
        for _ in range(n):
            cks, mk = kdf_ck(cks)  # sender
            header = pack(public, 0, ns)
            ns += 1
            message = header + encrypt(mk, pt, ad + header, info)
            ckr, mk = kdf_ck(ckr)  # receiver
            out = decrypt(mk, message[HEADER_LEN:], ad + message[:HEADER_LEN], info)
        self.cks, self.ckr, self.ns = cks, ckr, ns
        _check(out)


class FloorAlternating(_NoPrepare):
    """The composed floor with a DH ratchet step per message, in straight-line code.

    Per message: the sender's KDF_CK, header pack and ENCRYPT; the receiver's DH + KDF_RK (its new
    receiving chain), KDF_CK, DECRYPT, then GENERATE_DH + DH + KDF_RK (its next sending chain).
    The keys really flow, so each DECRYPT authenticates.
    """

    def __init__(self) -> None:
        self.ad = _identity_ad()
        self.rk = os.urandom(32)  # the receiver's root key: one KDF_RK behind the sender's
        self.sender, self.receiver = spec.generate_dh(), spec.generate_dh()
        _sender_rk, self.cks = spec.kdf_rk(self.rk, self.sender.dh(self.receiver.public), ROOT_INFO)

    def run(self, n: int) -> None:
        kdf_ck, kdf_rk, encrypt, decrypt, generate_dh = (
            spec.kdf_ck,
            spec.kdf_rk,
            spec.encrypt,
            spec.decrypt,
            spec.generate_dh,
        )
        pack, ad, info, root_info, pt = _HEADER.pack, self.ad, AEAD_INFO, ROOT_INFO, MESSAGE
        rk, cks, sender, receiver = self.rk, self.cks, self.sender, self.receiver
        out = b""
        for _ in range(n):
            cks, mk = kdf_ck(cks)  # sender
            header = pack(sender.public, 0, 0)
            message = header + encrypt(mk, pt, ad + header, info)
            their_public = message[:32]  # receiver
            rk, ckr = kdf_rk(rk, receiver.dh(their_public), root_info)
            ckr, mk = kdf_ck(ckr)
            out = decrypt(mk, message[HEADER_LEN:], ad + message[:HEADER_LEN], info)
            new_pair = generate_dh()
            # The new sender's root key is what the next receiver derives again from ``rk``.
            _sender_rk, cks = kdf_rk(rk, new_pair.dh(their_public), root_info)
            sender, receiver = new_pair, sender  # the receiver answers next
        self.rk, self.cks, self.sender, self.receiver = rk, cks, sender, receiver
        _check(out)


# --- group messages: sender keys against pairwise fan-out ------------------------------------------


class SenderKeyFanOut(_NoPrepare):
    """One group message to ``members`` members with sender keys: one encryption by the sender, the same
    ciphertext copied to every other member (as a list of references, as a fan-out would)."""

    def __init__(self, members: int) -> None:
        from relaysim.clients.groups import GroupKeys
        from relaysim.clients.session import PeerAddress

        self.others = [PeerAddress(f"m{i}", 1) for i in range(1, members)]
        self.sender = GroupKeys(PeerAddress("m0", 1))
        self.sender.prepare_send(_GROUP_ID, self.others)
        self.reader = GroupKeys(self.others[0])
        self.reader.process(self.sender.owner, self.sender.distribution(_GROUP_ID).to_bytes())
        self.copies = 0

    def run(self, n: int) -> None:
        encrypt, others, pt = self.sender.encrypt, self.others, MESSAGE
        body = b""
        for _ in range(n):
            body = encrypt(_GROUP_ID, pt)
            self.copies = len((body,) * len(others))
        _check(self.reader.decrypt(self.sender.owner, body)[1])


class PairwiseFanOut(_NoPrepare):
    """One group message to ``members`` members the way groups were sent before sender keys: a Double
    Ratchet encryption over the sender's session with every other member."""

    def __init__(self, members: int) -> None:
        pairs = [our_pair() for _ in range(1, members)]
        self.sessions = [a for a, _b in pairs]
        self.reader = pairs[0][1]

    def run(self, n: int) -> None:
        sessions, pt = self.sessions, MESSAGE
        first = b""
        for _ in range(n):
            messages = [s.encrypt(pt) for s in sessions]
            first = messages[0]
        _check(self.reader.decrypt(first))


def _group_contenders() -> list[Contender]:
    out = []
    for size in GROUP_SIZES:
        out += [
            Contender(
                f"group_sender_keys_{size}",
                f"sender keys, {size:,} members (one encryption)",
                GROUP,
                "group message",
                lambda size=size: SenderKeyFanOut(size),  # type: ignore[misc]
            ),
            Contender(
                f"group_pairwise_{size}",
                f"pairwise fan-out, {size:,} members ({size - 1:,} encryption{'s' if size > 2 else ''})",
                GROUP,
                "group message",
                lambda size=size: PairwiseFanOut(size),  # type: ignore[misc]
            ),
        ]
    return out


# --- PyPI doubleratchet 1.3.0 with the spec's recommended algorithms (docs/performance.md) ----------


def _drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run one of the package's coroutines; its API is async but never suspends."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a doubleratchet coroutine suspended; it is not supposed to")


class _TheirSide:
    """One ``doubleratchet.DoubleRatchet`` with the session's AD bound, as a ``_Side``.

    Messages stay ``EncryptedMessage`` objects between the two sides (no wire encoding), which
    spares the package the ~0.5 µs our side spends on bytes: the comparison leans its way.
    """

    __slots__ = ("ad", "dr")

    def __init__(self, dr: Any, ad: bytes) -> None:
        self.dr = dr
        self.ad = ad

    def encrypt(self, plaintext: bytes) -> Any:
        return _drive(self.dr.encrypt_message(plaintext, self.ad))

    def decrypt(self, message: Any) -> bytes:
        return bytes(_drive(self.dr.decrypt_message(message, self.ad)))


def their_pair() -> tuple[_TheirSide, _TheirSide]:
    """Alice and Bob on PyPI ``doubleratchet`` after one message each way. ImportError if absent."""
    import doubleratchet
    from doubleratchet.recommended import HashFunction, aead_aes_hmac, kdf_hkdf, kdf_separate_hmacs
    from doubleratchet.recommended.diffie_hellman_ratchet_curve25519 import DiffieHellmanRatchet

    class RootKDF(kdf_hkdf.KDF):
        @staticmethod
        def _get_hash_function() -> Any:
            return HashFunction.SHA_256

        @staticmethod
        def _get_info() -> bytes:
            return ROOT_INFO

    class ChainKDF(kdf_separate_hmacs.KDF):
        @staticmethod
        def _get_hash_function() -> Any:
            return HashFunction.SHA_256

    class Aead(aead_aes_hmac.AEAD):
        @staticmethod
        def _get_hash_function() -> Any:
            return HashFunction.SHA_256

        @staticmethod
        def _get_info() -> bytes:
            return AEAD_INFO

    class TheirDoubleRatchet(doubleratchet.DoubleRatchet):
        @staticmethod
        def _build_associated_data(associated_data: bytes, header: Any) -> bytes:
            # CONCAT(AD, header) = AD ‖ our 40-byte header layout
            return associated_data + _HEADER.pack(
                header.ratchet_pub, header.previous_sending_chain_length, header.sending_chain_length
            )

    config: dict[str, Any] = {
        "diffie_hellman_ratchet_class": DiffieHellmanRatchet,
        "root_chain_kdf": RootKDF,
        "message_chain_kdf": ChainKDF,
        "message_chain_constant": b"\x02\x01",  # the package keeps the first HMAC as the chain key
        "dos_protection_threshold": 1000,
        "max_num_skipped_message_keys": 1000,
        "aead": Aead,
    }
    sk, ad, bob_spk = os.urandom(32), _identity_ad(), spec.generate_dh()
    alice_dr, first = _drive(
        TheirDoubleRatchet.encrypt_initial_message(
            **config,
            shared_secret=sk,
            recipient_ratchet_pub=bob_spk.public,
            message=MESSAGE,
            associated_data=ad,
        )
    )
    bob_dr, plaintext = _drive(
        TheirDoubleRatchet.decrypt_initial_message(
            **config, shared_secret=sk, own_ratchet_priv=bob_spk.private, message=first, associated_data=ad
        )
    )
    _check(bytes(plaintext))
    alice, bob = _TheirSide(alice_dr, ad), _TheirSide(bob_dr, ad)
    _round_trip(alice, bob)
    return alice, bob


# --- vodozemac (Matrix Olm, Rust) ------------------------------------------------------------


def vodozemac_pair() -> tuple[Any, Any]:
    """Two vodozemac Olm sessions after one message each way. ImportError if vodozemac is absent."""
    import vodozemac

    alice, bob = vodozemac.Account(), vodozemac.Account()
    bob.generate_one_time_keys(1)
    otk = next(iter(bob.one_time_keys.values()))
    bob.mark_keys_as_published()
    alice_session = alice.create_outbound_session(bob.curve25519_key, otk)
    first = alice_session.encrypt(MESSAGE).to_pre_key()
    assert first is not None
    bob_session, plaintext = bob.create_inbound_session(alice.curve25519_key, first)
    _check(plaintext)
    _round_trip(alice_session, bob_session)  # after Bob's reply Alice stops sending prekey messages
    return alice_session, bob_session


# --- session setup ----------------------------------------------------------------------------


class OurSetup:
    """``n`` initiators, each with a bundle of one responder, prepared untimed; each ``run`` takes the next ones."""

    def __init__(self, pq: bool) -> None:
        self.pq = pq
        self.bob = Device("bob", 1, pq=pq)
        self.alices: list[Device] = []
        self.bundles: list[PreKeyBundle] = []
        self.next = 0

    def prepare(self, n: int) -> None:
        bob = Device("bob", 1, pq=self.pq)
        bob.generate_prekeys(n, n if self.pq else 0)
        s = bob.secrets
        kem = sorted((k for _seed, k in s.kem.values() if not k.last_resort), key=lambda k: k.id)
        self.bundles = [
            PreKeyBundle(
                s.identity.public,
                s.current_signed,
                OneTimePreKey(opk_id, s.one_time[opk_id].public),
                kem[i] if self.pq else None,
            )
            for i, opk_id in enumerate(sorted(s.one_time))
        ]
        self.bob = bob
        self.alices = [Device(f"alice{i}", 1, pq=self.pq) for i in range(n)]
        self.next = 0

    def run(self, n: int) -> None:
        bob, bob_address, pt = self.bob, self.bob.address, MESSAGE
        i, self.next = self.next, self.next + n
        out = b""
        for alice, bundle in zip(self.alices[i : i + n], self.bundles[i : i + n], strict=True):
            alice.start_session(bob_address, bundle)
            first = alice.encrypt(bob_address, pt)
            _check(bob.decrypt(alice.address, first))
            reply = bob.encrypt(alice.address, pt)
            out = alice.decrypt(bob_address, reply)
        _check(out)


class VodozemacSetup:
    """vodozemac's setup on the same work: published one-time keys → prekey message → reply.

    With ``verify_otk_signature`` the initiator also checks the responder's Ed25519 signature on the
    one-time key, as Matrix clients do with signed_curve25519 keys, and as our initiator checks the
    signed prekey's XEdDSA signature (information only; the targets use the plain setup).
    """

    def __init__(self, verify_otk_signature: bool = False) -> None:
        import vodozemac

        self.vz = vodozemac
        self.verify = verify_otk_signature
        self.items: list[tuple[Any, Any, Any, Any, Any, Any]] = []
        self.next = 0

    def prepare(self, n: int) -> None:
        vz = self.vz
        items: list[tuple[Any, Any, Any, Any, Any, Any]] = []
        bob = vz.Account()
        per_account = bob.max_number_of_one_time_keys
        otks: list[Any] = []
        while len(items) < n:
            if not otks:
                bob = vz.Account()
                bob.generate_one_time_keys(min(per_account, n - len(items)))
                otks = list(bob.one_time_keys.values())
                bob.mark_keys_as_published()
            otk = otks.pop()
            alice = vz.Account()
            signature = bob.sign(otk.to_bytes())
            items.append(
                (alice, alice.curve25519_key, bob, bob.curve25519_key, bob.ed25519_key, (otk, signature))
            )
        self.items = items
        self.next = 0

    def run(self, n: int) -> None:
        pt, verify = MESSAGE, self.verify
        i, self.next = self.next, self.next + n
        out = b""
        for alice, alice_key, bob, bob_key, bob_signing_key, (otk, signature) in self.items[i : i + n]:
            if verify:
                bob_signing_key.verify_signature(otk.to_bytes(), signature)
            alice_session = alice.create_outbound_session(bob_key, otk)
            first = alice_session.encrypt(pt).to_pre_key()
            bob_session, plaintext = bob.create_inbound_session(alice_key, first)
            _check(plaintext)
            out = alice_session.decrypt(bob_session.encrypt(pt))
        _check(out)


# --- where the time goes: the pieces of our one-direction path ---------------------------------


class Micro(_NoPrepare):
    """One piece of the path, called ``n`` times in a bare loop."""

    def __init__(self, loop: Callable[[int], None]) -> None:
        self.loop = loop

    def run(self, n: int) -> None:
        self.loop(n)


def _micro_loops() -> dict[str, Callable[[int], None]]:
    mk, public, ad = os.urandom(32), spec.generate_dh().public, _identity_ad()
    header = _HEADER.pack(public, 0, 7)
    ad_header = ad + header
    body = spec.encrypt(mk, MESSAGE, ad_header, AEAD_INFO)
    message = header + body
    enc_key, auth_key, iv = os.urandom(32), os.urandom(32), os.urandom(16)
    cbc = _p.aes_cbc_encrypt(enc_key, iv, MESSAGE)
    pair, their_public = spec.generate_dh(), spec.generate_dh().public
    bob = Device("bob", 1, pq=True)
    bundle = bob.generate_prekeys(1, 1)
    assert bundle.kem_prekey is not None
    kem_public = bundle.kem_prekey.public
    kem_seed = bob.secrets.kem[bundle.kem_prekey.id][0]
    _ss, kem_ciphertext = _p.mlkem_encapsulate(kem_public)
    spk_encoded = spec.encode_public_key(bundle.signed_prekey.public)

    def x3dh_kdf(n: int) -> None:
        f, km = spec.x3dh_kdf, bytes(32) + os.urandom(4 * 32)  # F ‖ DH1 ‖ DH2 ‖ DH3 ‖ DH4
        for _ in range(n):
            f(km, X3DH_INFO)

    def kdf_ck(n: int) -> None:
        f, ck = spec.kdf_ck, mk
        for _ in range(n):
            ck, _mk = f(ck)

    def header_pack(n: int) -> None:
        pack = _HEADER.pack
        for i in range(n):
            pack(public, 0, i)

    def header_unpack(n: int) -> None:
        unpack = _HEADER.unpack
        for _ in range(n):
            unpack(message[:HEADER_LEN])

    def encrypt(n: int) -> None:
        f = spec.encrypt
        for _ in range(n):
            f(mk, MESSAGE, ad + header, AEAD_INFO)

    def decrypt(n: int) -> None:
        f = spec.decrypt
        for _ in range(n):
            f(mk, message[HEADER_LEN:], ad + message[:HEADER_LEN], AEAD_INFO)

    def hkdf_80(n: int) -> None:
        f = _p.hkdf_sha256
        for _ in range(n):
            f(mk, _ZERO32, AEAD_INFO, 80)

    def cbc_encrypt(n: int) -> None:
        f = _p.aes_cbc_encrypt
        for _ in range(n):
            f(enc_key, iv, MESSAGE)

    def cbc_decrypt(n: int) -> None:
        f = _p.aes_cbc_decrypt
        for _ in range(n):
            f(enc_key, iv, cbc)

    def hmac_tag(n: int) -> None:
        f = _p.hmac_sha256
        for _ in range(n):
            f(auth_key, ad_header + cbc)

    def generate_dh(n: int) -> None:
        f = spec.generate_dh
        for _ in range(n):
            f()

    def x25519(n: int) -> None:
        f = pair.dh
        for _ in range(n):
            f(their_public)

    def kdf_rk(n: int) -> None:
        f, rk = spec.kdf_rk, mk
        for _ in range(n):
            rk, _ck = f(rk, mk, ROOT_INFO)

    def xeddsa_verify(n: int) -> None:
        f, ik, sig = spec.xeddsa_verify, bundle.identity_key, bundle.signed_prekey.signature
        for _ in range(n):
            f(ik, spk_encoded, sig)

    def mlkem_encapsulate(n: int) -> None:
        f = _p.mlkem_encapsulate
        for _ in range(n):
            f(kem_public)

    def mlkem_decapsulate(n: int) -> None:
        f = _p.mlkem_decapsulate
        for _ in range(n):
            f(kem_seed, kem_ciphertext)

    return {
        "kdf_ck": kdf_ck,
        "header_pack": header_pack,
        "header_unpack": header_unpack,
        "spec_encrypt": encrypt,
        "spec_decrypt": decrypt,
        "hkdf_80": hkdf_80,
        "aes_cbc_encrypt": cbc_encrypt,
        "aes_cbc_decrypt": cbc_decrypt,
        "hmac_tag": hmac_tag,
        "generate_dh": generate_dh,
        "x25519": x25519,
        "kdf_rk": kdf_rk,
        "xeddsa_verify": xeddsa_verify,
        "mlkem_encapsulate": mlkem_encapsulate,
        "mlkem_decapsulate": mlkem_decapsulate,
        "x3dh_kdf": x3dh_kdf,
    }


# (key, label, calls per one-direction message, indent) for the breakdown table; indented rows are
# parts of the row above them, not extra time.
BREAKDOWN_ROWS: list[tuple[str, str, int, int]] = [
    ("kdf_ck", "KDF_CK (2 × HMAC-SHA256), sender and receiver", 2, 0),
    ("header_pack", "header pack (struct)", 1, 0),
    ("spec_encrypt", "spec.encrypt (ENCRYPT, 100 B)", 1, 0),
    ("hkdf_80", "HKDF-SHA256 → 80 B message keys", 1, 1),
    ("aes_cbc_encrypt", "AES-256-CBC encrypt (context set-up + 112 B)", 1, 1),
    ("hmac_tag", "HMAC-SHA256 tag over AD ‖ header ‖ ciphertext", 1, 1),
    ("spec_decrypt", "spec.decrypt (DECRYPT)", 1, 0),
    ("hkdf_80", "HKDF-SHA256 → 80 B message keys", 1, 1),
    ("hmac_tag", "HMAC-SHA256 tag check", 1, 1),
    ("aes_cbc_decrypt", "AES-256-CBC decrypt + unpad", 1, 1),
    ("header_unpack", "header unpack (struct; not in the floor)", 1, 0),
]
DH_ROWS: list[tuple[str, str, int]] = [
    ("generate_dh", "GENERATE_DH (X25519 key from 32 random bytes)", 1),
    ("x25519", "DH (X25519)", 2),
    ("kdf_rk", "KDF_RK (HKDF-SHA256 → 64 B)", 2),
]
# The expensive steps of a session setup: (part key, label); counted by _Counting.
SETUP_ROWS: list[tuple[str, str]] = [
    ("generate_dh", "GENERATE_DH (X25519 key generation)"),
    ("x25519", "DH (X25519)"),
    ("xeddsa_verify", "XEdDSA verify (bundle signatures)"),
    ("mlkem_encapsulate", "ML-KEM-1024 encapsulate (from public bytes)"),
    ("mlkem_decapsulate", "ML-KEM-1024 decapsulate (key re-derived from its seed)"),
    ("x3dh_kdf", "KDF (X3DH/PQXDH: HKDF-SHA256 → SK)"),
    ("kdf_rk", "KDF_RK (HKDF-SHA256 → 64 B)"),
    ("kdf_ck", "KDF_CK (2 × HMAC-SHA256)"),
    ("spec_encrypt", "ENCRYPT (message keys, AES-256-CBC, HMAC)"),
    ("spec_decrypt", "DECRYPT (message keys, HMAC check, AES-256-CBC)"),
]
# The protocol's own floor for a session set-up (docs/performance.md): every step above, as many
# times as one of our set-ups makes it (counted), each at its own median timed alone in the run.
SETUP_FLOORS: Final = {"setup_x3dh": ("floor_setup_x3dh", False), "setup_pqxdh": ("floor_setup_pqxdh", True)}


class _Counting:
    """Counts calls of the setup's expensive steps while untimed setups run, then restores them.

    It wraps the module attributes the clients call through (``spec.generate_dh``,
    ``spec.xeddsa_verify`` and ``spec.xeddsa_verify_each``, ``_p.mlkem_*``, ``X25519Pair.dh``); a call that bypasses them is not
    counted and lands in the "everything else" row. Given a ``clock``, each call is also timed where
    it runs (``ns``: nanoseconds per step, summed over the calls).
    """

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self.counts = dict.fromkeys((key for key, _label in SETUP_ROWS), 0)
        self.ns = dict.fromkeys(self.counts, 0)
        self.clock = clock
        self._saved: list[tuple[object, str, Any]] = []

    def wrapper(
        self, original: Callable[..., Any], key: str, calls: Callable[..., int] | None = None
    ) -> Callable[..., Any]:
        """``original``, counted (``calls(*args)`` steps per call, else one) and, given a clock, timed."""
        counts, ns, clock = self.counts, self.ns, self.clock
        if clock is None:

            def counted(*args: Any, **kwargs: Any) -> Any:
                counts[key] += 1 if calls is None else calls(*args)
                return original(*args, **kwargs)

            return counted

        def timed(*args: Any, **kwargs: Any) -> Any:
            counts[key] += 1 if calls is None else calls(*args)
            start = clock()
            out = original(*args, **kwargs)
            ns[key] += clock() - start
            return out

        return timed

    def _wrap(self, owner: object, name: str, key: str, calls: Callable[..., int] | None = None) -> None:
        original = getattr(owner, name)
        self._saved.append((owner, name, original))
        setattr(owner, name, self.wrapper(original, key, calls))

    def __enter__(self) -> dict[str, int]:
        self._wrap(spec, "generate_dh", "generate_dh")
        self._wrap(_p.X25519Pair, "dh", "x25519")
        self._wrap(spec, "xeddsa_verify", "xeddsa_verify")
        # a bundle's signatures, checked together (one Edwards conversion of the identity key): one
        # step per signature
        self._wrap(spec, "xeddsa_verify_each", "xeddsa_verify", lambda _key, signed: len(signed))
        self._wrap(_p, "mlkem_encapsulate", "mlkem_encapsulate")
        self._wrap(_p, "mlkem_decapsulate", "mlkem_decapsulate")
        self._wrap(spec, "x3dh_kdf", "x3dh_kdf")
        self._wrap(spec, "kdf_rk", "kdf_rk")
        self._wrap(spec, "kdf_ck", "kdf_ck")
        self._wrap(spec, "encrypt", "spec_encrypt")
        self._wrap(spec, "decrypt", "spec_decrypt")
        return self.counts

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()


def setup_floor_samples(samples: dict[str, list[float]], counts: dict[str, int]) -> list[float] | None:
    """The floor of one session set-up per slice: each counted step's sample from that slice times
    its count, summed (the parts' slices are taken in the same rounds); None without the parts."""
    parts = [(f"part_{k}", n) for k, n in counts.items() if n]
    if not parts or any(key not in samples for key, _ in parts):
        return None
    slices = min(len(samples[key]) for key, _ in parts)
    return [sum(samples[key][i] * n for key, n in parts) for i in range(slices)]


def count_setup_steps(pq: bool) -> dict[str, int]:
    """How many of each expensive step one of our session setups performs (one untimed run)."""
    setup = OurSetup(pq)
    setup.prepare(1)
    with _Counting() as counts:
        setup.run(1)
    return dict(counts)


def _timer_overheads(clock: Callable[[], int], calls: int = 20_000) -> tuple[float, float]:
    """What ``_Counting``'s timing wrapper adds, in ns per call, measured around a step that does
    nothing: (inside the bracket, which inflates the step's own time; the whole wrapper, which
    inflates the set-up's)."""
    meter = _Counting(clock)

    def nothing(*_args: Any) -> None:
        return None

    wrapped = meter.wrapper(nothing, "kdf_ck")
    start = clock()
    for _ in range(calls):
        nothing()
    bare = clock() - start
    start = clock()
    for _ in range(calls):
        wrapped()
    whole = clock() - start - bare
    return meter.ns["kdf_ck"] / calls, max(whole, 0) / calls


def time_setup_in_situ(
    pq: bool, setups: int = 200, clock: Callable[[], int] = time.perf_counter_ns
) -> dict[str, Any]:
    """One more pass of ``setups`` set-ups, after the timed repeats and not part of the targets,
    with every counted step timed where it runs. It splits what the floor leaves out ("everything
    else") in two: the steps themselves costing more inside a set-up than in a loop of their own
    (the caches and branch predictors they find there are the rest of the set-up's, not their own),
    and the time outside every step — the Python around them (state, framing, checks). The
    wrapper's own cost, measured around a step that does nothing, is taken off both."""
    setup = OurSetup(pq)
    setup.prepare(setups)
    inside, whole = _timer_overheads(clock)
    meter = _Counting(clock)
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        with meter:
            start = clock()
            setup.run(setups)
            total = clock() - start
    finally:
        if enabled:
            gc.enable()
    calls = sum(meter.counts.values())
    steps = {
        key: (meter.ns[key] - n * inside) / n / 1000.0 for key, n in meter.counts.items() if n
    }  # µs per call, in situ
    steps_total = sum(meter.ns.values()) - calls * inside
    total_adjusted = total - calls * whole
    return {
        "setups": setups,
        "us_per_setup": total_adjusted / setups / 1000.0,
        "steps_us_per_setup": steps_total / setups / 1000.0,
        "outside_steps_us_per_setup": (total_adjusted - steps_total) / setups / 1000.0,
        "us_per_call": steps,
        "timer_ns_per_call": {"inside": inside, "whole": whole},
    }


# --- the contenders, the run, the ratios ----------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    group: str  # ONE_DIRECTION, ALTERNATING, SETUP or BREAKDOWN
    unit: str  # what one operation is
    make: Callable[[], Runner]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _available(make: Callable[[], object]) -> bool:
    try:
        make()
    except ImportError:
        return False
    return True


def contenders(
    *, with_doubleratchet: bool = True, with_vodozemac: bool = True, with_groups: bool = True
) -> list[Contender]:
    """Every contender this machine can run (the peers only when importable)."""
    has_dr = with_doubleratchet and _available(lambda: __import__("doubleratchet"))
    has_vz = with_vodozemac and _available(lambda: __import__("vodozemac"))
    dr, vz = (
        f"PyPI doubleratchet {_version('doubleratchet')}",
        f"vodozemac {_version('vodozemac')} (Olm, Rust)",
    )
    msg = "message"
    out = [
        Contender(
            "ours_one_direction",
            "ours (clients.ratchet)",
            ONE_DIRECTION,
            msg,
            lambda: OneDirection(*our_pair()),
        ),
        Contender("floor_one_direction", "composed-primitive floor", ONE_DIRECTION, msg, FloorOneDirection),
    ]
    if has_dr:
        out.append(
            Contender(
                "doubleratchet_one_direction", dr, ONE_DIRECTION, msg, lambda: OneDirection(*their_pair())
            )
        )
    if has_vz:
        out.append(
            Contender(
                "vodozemac_one_direction", vz, ONE_DIRECTION, msg, lambda: OneDirection(*vodozemac_pair())
            )
        )
    out += [
        Contender(
            "ours_alternating", "ours (clients.ratchet)", ALTERNATING, msg, lambda: Alternating(*our_pair())
        ),
        Contender("floor_alternating", "composed-primitive floor", ALTERNATING, msg, FloorAlternating),
    ]
    if has_dr:
        out.append(
            Contender("doubleratchet_alternating", dr, ALTERNATING, msg, lambda: Alternating(*their_pair()))
        )
    if has_vz:
        out.append(
            Contender("vodozemac_alternating", vz, ALTERNATING, msg, lambda: Alternating(*vodozemac_pair()))
        )
    out += [
        Contender("setup_x3dh", "ours, X3DH (Device, pq=False)", SETUP, "setup", lambda: OurSetup(pq=False)),
        Contender("setup_pqxdh", "ours, PQXDH (Device, pq=True)", SETUP, "setup", lambda: OurSetup(pq=True)),
    ]
    if has_vz:
        out += [
            Contender("setup_vodozemac", vz, SETUP, "setup", VodozemacSetup),
            Contender(
                "setup_vodozemac_signed_otk",
                "vodozemac + Ed25519 check of the signed one-time key (info)",
                SETUP,
                "setup",
                lambda: VodozemacSetup(verify_otk_signature=True),
            ),
        ]
    if with_groups:
        out += _group_contenders()
    for key, loop in _micro_loops().items():
        out.append(Contender(f"part_{key}", key, BREAKDOWN, "call", _micro_factory(loop)))
    return out


def _micro_factory(loop: Callable[[int], None]) -> Callable[[], Runner]:
    return lambda: Micro(loop)


@dataclass(frozen=True)
class Ratio(harness.Target):
    """A target on ``numerator``'s median over ``denominator``'s (contender keys)."""

    numerator: str = ""
    denominator: str = ""


# ours / peer ≤ target, or peer / ours ≥ target ("× faster than"); docs/performance.md, "Targets".
RATIOS: list[Ratio] = [
    Ratio(
        "one_direction_vs_floor",
        "one direction: ours / floor",
        "<=",
        1.15,
        "ours_one_direction",
        "floor_one_direction",
    ),
    Ratio(
        "one_direction_vs_vodozemac",
        "one direction: ours / vodozemac",
        "<=",
        1.6,
        "ours_one_direction",
        "vodozemac_one_direction",
    ),
    Ratio(
        "one_direction_speedup_vs_doubleratchet",
        "one direction: doubleratchet / ours (× faster)",
        ">=",
        3.5,
        "doubleratchet_one_direction",
        "ours_one_direction",
    ),
    Ratio(
        "alternating_vs_vodozemac",
        "alternating: ours / vodozemac",
        "<=",
        1.15,
        "ours_alternating",
        "vodozemac_alternating",
    ),
    Ratio(
        "alternating_speedup_vs_doubleratchet",
        "alternating: doubleratchet / ours (× faster)",
        ">=",
        2.0,
        "doubleratchet_alternating",
        "ours_alternating",
    ),
    Ratio(
        "setup_x3dh_vs_floor",
        "setup: ours X3DH / the protocol's own floor",
        "<=",
        1.15,
        "setup_x3dh",
        "floor_setup_x3dh",
    ),
    Ratio(
        "setup_pqxdh_vs_floor",
        "setup: ours PQXDH / the protocol's own floor",
        "<=",
        1.15,
        "setup_pqxdh",
        "floor_setup_pqxdh",
    ),
    # vodozemac stays for information: Olm makes 3 key generations and 8 exchanges where Signal's
    # protocol needs 4 and 13, so it is not the same work (docs/performance.md).
    Ratio(
        "setup_x3dh_vs_vodozemac", "setup: ours X3DH / vodozemac", "<=", None, "setup_x3dh", "setup_vodozemac"
    ),
    Ratio(
        "setup_pqxdh_vs_vodozemac",
        "setup: ours PQXDH / vodozemac",
        "<=",
        None,
        "setup_pqxdh",
        "setup_vodozemac",
    ),
    Ratio(
        "alternating_vs_floor",
        "alternating: ours / floor",
        "<=",
        None,
        "ours_alternating",
        "floor_alternating",
    ),
    # How far below vodozemac the floor itself is: no state machine can beat its own floor, so when
    # floor / vodozemac is above a vodozemac target, that target is out of reach of these primitives.
    Ratio(
        "one_direction_floor_vs_vodozemac",
        "one direction: floor / vodozemac",
        "<=",
        None,
        "floor_one_direction",
        "vodozemac_one_direction",
    ),
    Ratio(
        "alternating_floor_vs_vodozemac",
        "alternating: floor / vodozemac",
        "<=",
        None,
        "floor_alternating",
        "vodozemac_alternating",
    ),
    Ratio(
        "setup_x3dh_vs_vodozemac_signed_otk",
        "setup: ours X3DH / vodozemac with OTK signature check",
        "<=",
        None,
        "setup_x3dh",
        "setup_vodozemac_signed_otk",
    ),
]


def _chunk_sizes(n: int, chunks: int) -> list[int]:
    """``n`` split into at most ``chunks`` near-equal positive parts."""
    k = max(1, min(chunks, n))
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def run_benchmarks(
    cs: list[Contender],
    *,
    messages: int,
    setups: int,
    repeat: int,
    chunks: int = 10,
    group_messages: int | None = None,
    progress: harness.Progress | None = None,
) -> dict[str, list[float]]:
    """Samples of µs per operation for every contender: one per slice, ``repeat × chunks`` of them.

    In each repeat every contender does its whole count (``messages``, or ``setups``), in
    ``chunks`` slices that take turns round-robin with the other contenders' slices, so that a
    burst of machine noise lands on all of them alike and the median can leave it out; the
    round-robin order is rotated from repeat to repeat. ``prepare`` runs before the clock, and the
    garbage collector is collected before and off during the timed part of a repeat, as ``timeit``
    does. Sample ``i`` of every contender of a group comes from the same round.
    """
    runners = {c.key: c.make() for c in cs}
    per_group = {SETUP: setups, GROUP: messages if group_messages is None else group_messages}
    counts = {c.key: per_group.get(c.group, messages) for c in cs}
    for c in cs:  # warm-up: imports, caches, first-call paths
        runners[c.key].prepare(min(counts[c.key], 5))
        runners[c.key].run(min(counts[c.key], 5))
    sizes = {key: _chunk_sizes(n, chunks) for key, n in counts.items()}
    samples: dict[str, list[float]] = {c.key: [] for c in cs}
    clock = time.perf_counter_ns
    for r in range(repeat):
        shift = r % len(cs)
        order = [(c.key, runners[c.key]) for c in cs[shift:] + cs[:shift]]
        for key, runner in order:
            runner.prepare(counts[key])
        gc.collect()
        enabled = gc.isenabled()
        gc.disable()
        try:
            for i in range(chunks):
                for key, runner in order:
                    if i < len(sizes[key]):
                        n = sizes[key][i]
                        start = clock()
                        runner.run(n)
                        samples[key].append((clock() - start) / n / 1000.0)
        finally:
            if enabled:
                gc.enable()
        if progress is not None:
            progress(f"repeat {r + 1} of {repeat}", r + 1, repeat)
    return samples


def compute_ratios(
    medians: dict[str, float], samples: dict[str, list[float]] | None = None
) -> dict[str, dict[str, Any]]:
    """Each target's ratio of medians (``value``, what ``met`` judges) and, given the samples, the
    median of the per-slice ratios (``paired_median``: each pair was timed in the same round)."""
    out: dict[str, dict[str, Any]] = {}
    for ratio in RATIOS:
        num, den = medians.get(ratio.numerator), medians.get(ratio.denominator)
        value = None if num is None or den is None or den <= 0 else num / den
        paired = None
        if (
            value is not None
            and samples is not None
            and len(samples[ratio.numerator]) == len(samples[ratio.denominator])
        ):
            pairs = zip(samples[ratio.numerator], samples[ratio.denominator], strict=True)
            paired = statistics.median(n / d for n, d in pairs)
        out[ratio.key] = {
            "numerator": ratio.numerator,
            "denominator": ratio.denominator,
            **harness.target_row(ratio, value, paired),
        }
    return out


def compute_breakdown(medians: dict[str, float], in_situ_setups: int = 0) -> dict[str, Any]:
    """Our one-direction message, piece by piece (µs per message), and what the state machine adds;
    each set-up's steps, and with ``in_situ_setups`` the pass that times them where they run."""
    ours = medians["ours_one_direction"]
    rows: list[dict[str, Any]] = []
    for key, label, calls, indent in BREAKDOWN_ROWS:
        per_call = medians[f"part_{key}"]
        rows.append(
            {
                "part": key,
                "label": label,
                "us_per_call": per_call,
                "calls_per_message": calls,
                "us_per_message": per_call * calls,
                "share_of_ours": per_call * calls / ours,
                "part_of_row_above": bool(indent),
            }
        )
    top = sum(
        r["us_per_message"] for r in rows if not r["part_of_row_above"] and r["part"] != "header_unpack"
    )
    floor = medians["floor_one_direction"]
    dh: list[dict[str, Any]] = [
        {"part": key, "label": label, "us_per_call": medians[f"part_{key}"], "calls_per_message": calls}
        for key, label, calls in DH_ROWS
    ]
    setups: dict[str, Any] = {}
    for key, pq in (("setup_x3dh", False), ("setup_pqxdh", True)):
        counts = count_setup_steps(pq)
        parts: list[dict[str, Any]] = [
            {
                "part": part,
                "label": label,
                "calls_per_setup": counts[part],
                "us_per_call": medians[f"part_{part}"],
                "us_per_setup": counts[part] * medians[f"part_{part}"],
            }
            for part, label in SETUP_ROWS
            if counts[part]
        ]
        total = medians[key]
        setups[key] = {
            "us_per_setup": total,
            "parts": parts,
            "everything_else": total - sum(p["us_per_setup"] for p in parts),
        }
        if in_situ_setups:
            situ = time_setup_in_situ(pq, in_situ_setups)
            for p in parts:
                p["us_per_call_in_situ"] = situ["us_per_call"].get(p["part"])
            setups[key]["in_situ"] = situ
    return {
        "setup": setups,
        "ours_one_direction": ours,
        "floor_one_direction": floor,
        "parts": rows,
        "sum_of_floor_parts": top,
        "floor_loop_and_concat_overhead": floor - top,
        "state_machine": ours - floor,
        "dh_step_parts": dh,
        "dh_step_sum": sum(d["us_per_call"] * d["calls_per_message"] for d in dh),
    }


# --- output -------------------------------------------------------------------------------------


def _fmt_us(v: float | None) -> str:
    return "—" if v is None else f"{v:8.1f}" if v >= 10 else f"{v:8.2f}"


def format_report(report: dict[str, Any]) -> str:
    cfg = report["config"]
    res = report["results"]
    lines = [
        f"relaysim bench crypto — {cfg['message_bytes']}-byte messages; {cfg['messages']} messages and "
        f"{cfg['setups']} setups per repeat × {cfg['repeat']} repeats, each in {cfg['chunks']} interleaved "
        "slices; median over the slices, µs per operation",
        f"Python {cfg['python']}, cryptography {cfg['versions']['cryptography']}, {cfg['machine']}"
        + harness.load_text(cfg.get("load_average")),
    ]
    titles = {
        ONE_DIRECTION: "ratchet, one direction — Alice sends, Bob decrypts (µs per message, encrypt + decrypt)",
        ALTERNATING: "ratchet, alternating senders — a DH ratchet step every message (µs per message)",
        SETUP: "session setup — registered devices → first message + reply, both decrypted (µs per setup)",
        GROUP: "group message — the sender's cost, sender keys against pairwise fan-out (µs per group message)",
    }
    for group, title in titles.items():
        lines += ["", title, f"  {'contender':62s} {'median':>8s} {'min':>8s} {'max':>8s}"]
        for r in res.values():
            if r["group"] == group:
                lines.append(
                    f"  {r['label']:62s} {_fmt_us(r['us_per_op'])} {_fmt_us(r['min'])} {_fmt_us(r['max'])}"
                )
    lines += harness.format_targets(
        report["ratios"], paired="per-slice ratios", unjudged="n/a (peer missing)"
    )
    b = report["breakdown"]
    lines += [
        "",
        f"where the time goes — our one-direction message, {b['ours_one_direction']:.1f} µs (each part timed alone)",
        f"  {'part':56s} {'µs/call':>8s} {'calls':>5s} {'µs/msg':>8s} {'of ours':>7s}",
    ]
    for row in b["parts"]:
        label = ("    · " if row["part_of_row_above"] else "  ") + row["label"]
        lines.append(
            f"{label:58s} {row['us_per_call']:8.2f} {row['calls_per_message']:5d} "
            f"{row['us_per_message']:8.2f} {row['share_of_ours']:7.0%}"
        )
    ours = b["ours_one_direction"]
    lines += [
        f"  {'sum of the floor parts (KDF_CK ×2, pack, ENCRYPT, DECRYPT)':56s} {'':8s} {'':5s} "
        f"{b['sum_of_floor_parts']:8.2f} {b['sum_of_floor_parts'] / ours:7.0%}",
        f"  {'floor − parts (loop, AD concatenation, slicing; ± noise)':56s} {'':8s} {'':5s} "
        f"{b['floor_loop_and_concat_overhead']:8.2f} {b['floor_loop_and_concat_overhead'] / ours:7.0%}",
        f"  {'state machine (ours − floor)':56s} {'':8s} {'':5s} {b['state_machine']:8.2f} "
        f"{b['state_machine'] / ours:7.0%}",
        "  a DH ratchet step adds, per message:",
    ]
    for d in b["dh_step_parts"]:
        lines.append(
            f"    · {d['label']:52s} {d['us_per_call']:8.2f} {d['calls_per_message']:5d} "
            f"{d['us_per_call'] * d['calls_per_message']:8.2f}"
        )
    lines.append(f"    {'sum':54s} {'':8s} {'':5s} {b['dh_step_sum']:8.2f}")
    for key, title in (("setup_x3dh", "X3DH"), ("setup_pqxdh", "PQXDH")):
        st = b["setup"][key]
        total = st["us_per_setup"]
        lines += [
            "",
            f"where the time goes — our {title} session setup, {total:.0f} µs (steps counted in one run, "
            "each timed alone)",
            f"  {'step':56s} {'µs/call':>8s} {'calls':>5s} {'µs':>8s} {'of it':>7s} {'in situ':>8s}",
        ]
        for row in st["parts"]:
            situ = row.get("us_per_call_in_situ")
            lines.append(
                f"  {row['label']:56s} {row['us_per_call']:8.2f} {row['calls_per_setup']:5d} "
                f"{row['us_per_setup']:8.1f} {row['us_per_setup'] / total:7.0%}"
                + ("" if situ is None else f" {situ:8.2f}")
            )
        rest = st["everything_else"]
        lines.append(
            f"  {'everything else: total − the steps timed alone':56s} {'':8s} {'':5s} "
            f"{rest:8.1f} {rest / total:7.0%}"
        )
        situ_pass = st.get("in_situ")
        if situ_pass is not None:
            alone = sum(row["us_per_setup"] for row in st["parts"])
            steps, outside = situ_pass["steps_us_per_setup"], situ_pass["outside_steps_us_per_setup"]
            lines += [
                f"  in one more pass of {situ_pass['setups']} set-ups ({situ_pass['us_per_setup']:.0f} µs each), "
                "each step timed where it runs (the 'in situ' column):",
                f"    · {'the steps themselves':52s} {'':8s} {'':5s} {steps:8.1f} "
                f"{steps / situ_pass['us_per_setup']:7.0%}  (timed alone {alone:.0f}: {steps - alone:+.0f})",
                f"    · {'outside every step (Python: state, framing, checks)':52s} {'':8s} {'':5s} "
                f"{outside:8.1f} {outside / situ_pass['us_per_setup']:7.0%}",
            ]
    return "\n".join(lines)


def build_report(
    cs: Iterable[Contender], samples: dict[str, list[float]], args: argparse.Namespace
) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {
        c.key: {
            "label": c.label,
            "group": c.group,
            "unit": c.unit,
            **harness.sample_summary(samples[c.key], "us_per_op"),
        }
        for c in cs
    }
    for setup_key, (floor_key, pq) in SETUP_FLOORS.items():
        floor = setup_floor_samples(samples, count_setup_steps(pq))
        if floor is not None and setup_key in samples:
            samples = {**samples, floor_key: floor}
            results[floor_key] = {
                "label": f"{'PQXDH' if pq else 'X3DH'}: the protocol's own floor (its steps, each timed alone)",
                "group": SETUP,
                "unit": "setup",
                **harness.sample_summary(floor, "us_per_op"),
            }
    medians = {k: r["us_per_op"] for k, r in results.items()}
    return {
        "config": {
            "message_bytes": MESSAGE_LEN,
            "messages": args.messages,
            "setups": args.setups,
            "group_messages": args.group_messages,
            "repeat": args.repeat,
            "chunks": args.chunks,
            **harness.machine_config(),
            "versions": {d: _version(d) for d in ("cryptography", "doubleratchet", "vodozemac", "msgpack")},
        },
        "results": results,
        "ratios": compute_ratios(medians, samples),
        "breakdown": compute_breakdown(medians, in_situ_setups=4 * args.setups),
    }


def _parser() -> argparse.ArgumentParser:
    p = harness.make_parser(
        "relaysim bench crypto",
        __doc__,
        ["relaysim bench crypto", "relaysim bench crypto --messages 2000 --json - --check > crypto.json"],
    )
    p.add_argument(
        "--messages",
        type=whole_number("messages", 1, 1_000_000),
        default=500,
        metavar="N",
        help="messages per contender per repeat (default: 500)",
    )
    p.add_argument(
        "--setups",
        type=whole_number("set-ups", 1, 100_000),
        default=200,
        metavar="S",
        help="session setups per contender per repeat (default: 200: 20 to a slice; see above)",
    )
    p.add_argument(
        "--group-messages",
        type=whole_number("group messages", 1, 100_000),
        default=20,
        metavar="G",
        help="group messages per group contender per repeat (default: 20; pairwise to 1,000 members is ~1,000 encryptions each)",
    )
    p.add_argument(
        "--repeat",
        type=whole_number("repeats", 1, 1_000),
        default=15,
        metavar="R",
        help="repeats (default: 15)",
    )
    p.add_argument(
        "--chunks",
        type=whole_number("slices", 1, 1_000),
        default=10,
        metavar="C",
        help="slices per contender per repeat, interleaved round-robin with the others'; each is a sample (default: 10)",
    )
    p.add_argument("--no-vodozemac", action="store_true", help="leave vodozemac out even if it is importable")
    p.add_argument("--no-doubleratchet", action="store_true", help="leave PyPI doubleratchet out")
    harness.add_common_options(p)
    return state_bounds(p)


def main(argv: list[str]) -> int:
    """``relaysim bench crypto [options]``; the exit status (0; 1 if a contender failed or, with
    --check, a target was not met; 2 on bad options)."""
    parser = _parser()
    args = parser.parse_args(argv)
    cs = contenders(with_doubleratchet=not args.no_doubleratchet, with_vodozemac=not args.no_vodozemac)

    def measure(progress: harness.Progress) -> dict[str, Any]:
        samples = run_benchmarks(
            cs,
            messages=args.messages,
            setups=args.setups,
            repeat=args.repeat,
            chunks=args.chunks,
            group_messages=args.group_messages,
            progress=progress,
        )
        return build_report(cs, samples, args)

    return harness.run_bench("crypto", args, measure, format_report, lambda report: report["ratios"].values())


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
