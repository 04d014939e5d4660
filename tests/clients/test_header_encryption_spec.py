"""The Double Ratchet with header encryption against the spec's own pseudocode, byte for byte.

No independent implementation of header encryption is at hand (the PyPI ``doubleratchet`` package
has none), so ``SpecHE`` below is the Double Ratchet spec's §4 written out line by line —
RatchetInitAliceHE / RatchetInitBobHE, RatchetEncryptHE, RatchetDecryptHE with
TrySkippedMessageKeysHE, DecryptHeader, SkipMessageKeysHE and DHRatchetHE — with the spec's note
on failure ("any changes to the state should be discarded") done by copying the state first, and
one bound the spec leaves to the application: skipped keys are kept only for the newest
``MAX_RECEIVING_CHAINS`` receiving chains (header keys), the current one included (libsignal's
MAX_RECEIVER_CHAINS; see ``clients/ratchet.py``): a chain's are dropped when the DH ratchet step to
the fifth chain after it is taken, whether or not the chains between hold any. It
takes its primitives (KDF_RK_HE, KDF_CK, ENCRYPT, HENCRYPT, GENERATE_DH) from ``clients.spec``,
which ``tests/clients/test_spec_vectors.py`` checks against their definitions, so what is compared
here is the state machine: which keys each message uses, what is skipped and stored, when the DH
ratchet turns and which header key is tried. The header layout is ours (``clients/ratchet.py``).

With both Alices drawing from one seeded RNG (and both Bobs from another), every ciphertext must
be the same bytes, and every delivery — in order, out of order, repeated or tampered with — must be
read the same or refused by both.
"""

from __future__ import annotations

import copy
import struct
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from relaysim.clients import _primitives as _p
from relaysim.clients import spec
from relaysim.clients.errors import DecryptionError
from relaysim.clients.ratchet import MAX_RECEIVING_CHAINS, DoubleRatchet, RatchetConfig
from tests.conftest import seeded_rng

MAX_SKIP = 40
ROOT_INFO = b"WhisperRatchet"  # Double Ratchet §5.2's application constants, libsignal's values
AEAD_INFO = b"WhisperMessageKeys"
HEADER = struct.Struct(">32sII")  # dh ‖ pn ‖ n (clients/ratchet.py)
ENC_HEADER_LEN = HEADER.size + 16


@dataclass
class SpecHE:
    """The state variables of §3.2 and §4.3 under the spec's names."""

    rng: object
    DHs: _p.X25519Pair | None = None
    DHr: bytes | None = None
    RK: bytes = b""
    CKs: bytes | None = None
    CKr: bytes | None = None
    Ns: int = 0
    Nr: int = 0
    PN: int = 0
    MKSKIPPED: dict[tuple[bytes, int], bytes] = field(default_factory=dict)
    HKs: bytes | None = None
    HKr: bytes | None = None
    NHKs: bytes | None = None
    NHKr: bytes | None = None
    receiving: list[bytes] = field(default_factory=list)  # not in §4: the HKr of each chain, oldest first

    @classmethod
    def init_alice(cls, sk: bytes, bob_dh_public_key: bytes, hka: bytes, nhkb: bytes, rng: object) -> SpecHE:
        s = cls(rng)
        s.DHs = spec.generate_dh(rng)  # type: ignore[arg-type]
        s.DHr = bob_dh_public_key
        s.RK, s.CKs, s.NHKs = spec.kdf_rk_he(sk, s.DHs.dh(s.DHr), ROOT_INFO)
        s.HKs, s.NHKr = hka, nhkb
        return s

    @classmethod
    def init_bob(
        cls, sk: bytes, bob_dh_key_pair: _p.X25519Pair, hka: bytes, nhkb: bytes, rng: object
    ) -> SpecHE:
        s = cls(rng)
        s.DHs = bob_dh_key_pair
        s.RK = sk
        s.NHKs, s.NHKr = nhkb, hka
        return s

    def encrypt(self, plaintext: bytes, ad: bytes) -> bytes:
        assert self.CKs is not None and self.DHs is not None and self.HKs is not None
        self.CKs, mk = spec.kdf_ck(self.CKs)
        enc_header = spec.hencrypt(self.HKs, HEADER.pack(self.DHs.public, self.PN, self.Ns))
        self.Ns += 1
        return enc_header + spec.encrypt(mk, plaintext, ad + enc_header, AEAD_INFO)

    def decrypt(self, message: bytes, ad: bytes) -> bytes:
        saved = copy.deepcopy({k: v for k, v in vars(self).items() if k != "rng"})
        generator = self.rng.__self__  # type: ignore[attr-defined]
        drawn = generator.getstate()
        try:
            return self._decrypt(message[:ENC_HEADER_LEN], message[ENC_HEADER_LEN:], ad)
        except Exception:
            # §3.5: a failed decryption discards every change, the key pair GENERATE_DH drew included
            # (ours draws it only once the message has authenticated: the same draws either way)
            vars(self).update(saved)
            generator.setstate(drawn)
            raise DecryptionError() from None

    def _decrypt(self, enc_header: bytes, ciphertext: bytes, ad: bytes) -> bytes:
        for (hk, n), mk in list(self.MKSKIPPED.items()):  # TrySkippedMessageKeysHE
            header = spec.hdecrypt(hk, enc_header)
            if header is not None and HEADER.unpack(header)[2] == n:
                del self.MKSKIPPED[(hk, n)]
                return spec.decrypt(mk, ciphertext, ad + enc_header, AEAD_INFO)
        header = spec.hdecrypt(self.HKr, enc_header)  # DecryptHeader
        dh_ratchet = False
        if header is None:
            header = spec.hdecrypt(self.NHKr, enc_header)
            if header is None:
                raise DecryptionError()
            dh_ratchet = True
        dh, pn, n = HEADER.unpack(header)
        if dh_ratchet:
            self._skip(pn)
            self._dh_ratchet(dh)
        self._skip(n)
        if dh_ratchet:
            # Not in §4: skipped keys of the newest MAX_RECEIVING_CHAINS receiving chains only.
            window = self.receiving[-MAX_RECEIVING_CHAINS:]
            for key in [key for key in self.MKSKIPPED if key[0] not in window]:
                del self.MKSKIPPED[key]
        assert self.CKr is not None
        self.CKr, mk = spec.kdf_ck(self.CKr)
        self.Nr += 1
        return spec.decrypt(mk, ciphertext, ad + enc_header, AEAD_INFO)

    def _skip(self, until: int) -> None:  # SkipMessageKeysHE
        if self.Nr + MAX_SKIP < until:
            raise DecryptionError()
        if self.CKr is not None:
            while self.Nr < until:
                self.CKr, mk = spec.kdf_ck(self.CKr)
                assert self.HKr is not None
                self.MKSKIPPED[(self.HKr, self.Nr)] = mk
                self.Nr += 1

    def _dh_ratchet(self, dh: bytes) -> None:  # DHRatchetHE
        assert self.DHs is not None
        self.PN, self.Ns, self.Nr = self.Ns, 0, 0
        self.HKs, self.HKr = self.NHKs, self.NHKr
        assert self.HKr is not None
        self.receiving.append(self.HKr)
        self.DHr = dh
        self.RK, self.CKr, self.NHKr = spec.kdf_rk_he(self.RK, self.DHs.dh(self.DHr), ROOT_INFO)
        self.DHs = spec.generate_dh(self.rng)  # type: ignore[arg-type]
        self.RK, self.CKs, self.NHKs = spec.kdf_rk_he(self.RK, self.DHs.dh(self.DHr), ROOT_INFO)


# An action: (who acts: 0 Alice, 1 Bob; kind: 0 send, 1 deliver and keep, 2 deliver and drop,
# 3 deliver a tampered copy, 4 send with PN lowered to the index mod PN + 1 — a hostile sender, or
# one whose state was rolled back; which message in flight, as an index mod their number).
Action = tuple[int, int, int]
actions = st.lists(
    st.tuples(st.integers(0, 1), st.integers(0, 4), st.integers(0, 50)), min_size=1, max_size=60
)


def converse(seed: int, steps: list[Action]) -> list[bytes | None]:
    """Run ``steps`` on our ratchet and on ``SpecHE`` side by side, checking every byte and answer;
    what each delivery read (None: refused), in order."""
    setup = seeded_rng(seed)
    sk, hka, nhkb = setup(32), setup(64), setup(64)
    ad = b"\x05" + setup(32) + b"\x05" + setup(32)
    bob_spk = spec.generate_dh(setup)
    config = RatchetConfig(header_encryption=True, max_skip=MAX_SKIP, max_stored_skipped=10**6)
    ours = [
        DoubleRatchet.init_alice(
            sk, bob_spk.public, ad, config=config, rng=seeded_rng(seed + 1), shared_hka=hka, shared_nhkb=nhkb
        ),
        DoubleRatchet.init_bob(
            sk, bob_spk, ad, config=config, rng=seeded_rng(seed + 2), shared_hka=hka, shared_nhkb=nhkb
        ),
    ]
    theirs = [
        SpecHE.init_alice(sk, bob_spk.public, hka, nhkb, seeded_rng(seed + 1)),
        SpecHE.init_bob(sk, bob_spk, hka, nhkb, seeded_rng(seed + 2)),
    ]
    in_flight: list[list[tuple[bytes, bytes]]] = [[], []]  # messages on their way to Alice, to Bob
    answers: list[bytes | None] = []
    for count, (who, kind, index) in enumerate(steps):
        if kind in (0, 4):
            if ours[who].cks is None:
                continue  # Bob sends only once he has read something
            if kind == 4:
                ours[who].pn = theirs[who].PN = index % (ours[who].pn + 1)
            plaintext = b"message %d" % count
            message = ours[who].encrypt(plaintext)
            assert message == theirs[who].encrypt(plaintext, ad)
            in_flight[1 - who].append((message, plaintext))
            continue
        box = in_flight[who]
        if not box:
            continue
        message, plaintext = box.pop(index % len(box)) if kind == 2 else box[index % len(box)]
        if kind == 3:
            message = message[:-1] + bytes((message[-1] ^ 1,))
        try:
            read: bytes | None = ours[who].decrypt(message)
        except DecryptionError:
            read = None
        try:
            expected: bytes | None = theirs[who].decrypt(message, ad)
        except DecryptionError:
            expected = None
        assert read == expected
        assert read in (None, plaintext)
        answers.append(read)
    return answers


@settings(deadline=None)
@given(seed=st.integers(0, 2**16), steps=actions)
def test_header_encryption_is_the_spec_pseudocode_byte_for_byte(seed: int, steps: list[Action]) -> None:
    converse(seed, steps)


def test_header_encryption_is_the_spec_pseudocode_over_many_seeded_conversations() -> None:
    """The same over 150 conversations of 80 steps drawn from a seeded generator: messages skipped on
    a chain the ratchet has just turned to, and read later, come up here every run."""
    import random

    for seed in range(150):
        draw = random.Random(seed)
        converse(seed, [(draw.randrange(2), draw.randrange(4), draw.randrange(50)) for _ in range(80)])


def test_header_encryption_is_the_spec_pseudocode_when_pn_is_below_what_was_read() -> None:
    """SkipMessageKeysHE skips only while Nr < PN: Bob has read three messages on Alice's chain, and her
    next chain's message says PN = 1. The spec reads it (nothing skipped), and so must we."""
    steps: list[Action] = [(0, 0, 0)] * 3 + [(1, 2, 0)] * 3 + [(1, 0, 0), (0, 2, 0), (0, 4, 1), (1, 2, 0)]
    assert converse(5, steps)[-1] == b"message 8"


def test_header_encryption_is_the_spec_pseudocode_when_skipped_keys_span_too_many_chains() -> None:
    """Each side in turn sends two messages and the other reads the second, leaving one skipped key
    on each of eight chains of Alice's (and seven of Bob's); then the first messages come. The oldest
    chains' keys went when the ratchet turned to the fifth chain after theirs: both refuse those
    messages, both read the rest."""
    steps: list[Action] = []
    for turn in range(8):
        steps += [(0, 0, 0), (0, 0, 0), (1, 2, turn + 1)]  # Alice sends two; Bob reads the second
        if turn < 7:
            steps += [(1, 0, 0), (1, 0, 0), (0, 2, turn + 1)]  # and so Bob, to Alice
    late = [(1, 2, 0)] * 8 + [(0, 2, 0)] * 7  # the first of each turn, oldest first
    answers = converse(3, steps + late)
    assert answers[:15] == [b"message %d" % i for i in range(1, 44, 3)]  # every second message read
    to_bob, to_alice = answers[15:23], answers[23:]
    assert to_bob == [None] * 3 + [b"message %d" % (6 * turn) for turn in range(3, 8)]
    assert to_alice == [None] * 2 + [b"message %d" % (6 * turn + 3) for turn in range(2, 7)]
