"""Answers computed ahead (clients.ahead): a receiving device's costliest steps, listed from its state
before the message arrives (``Device.exchanges_ahead``), are exactly the ones its decryption then
computes; an ``Ahead`` table holding their answers gives the same bytes, and holds nothing else."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest

from relaysim.clients import _primitives as _p
from relaysim.clients.ahead import (
    AHEAD_BASE,
    AHEAD_DH,
    AHEAD_ENCAPS,
    AHEAD_KEM,
    AHEAD_VERIFY,
    Ahead,
    compute_ahead,
    use_ahead,
)
from relaysim.clients.errors import DecryptionError
from relaysim.clients.session import Device, PeerAddress
from relaysim.sims.world.util import KeyStream

ANA, BEN = PeerAddress("ana", 1), PeerAddress("ben", 1)


@contextmanager
def _recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[object, ...]]]:
    """Every X25519 exchange, public-key computation and ML-KEM decapsulation made inside, as jobs."""
    made: list[tuple[object, ...]] = []
    dh, base, from_seed = (
        _p._sodium_scalarmult,
        _p._sodium_scalarmult_base,
        _p.MLKEM1024PrivateKey.from_seed_bytes,
    )

    class _Key:
        def __init__(self, seed: bytes) -> None:
            self.seed, self.key = seed, from_seed(seed)

        def decapsulate(self, ct: bytes) -> bytes:
            made.append((AHEAD_KEM, self.seed, ct))
            return self.key.decapsulate(ct)

    with monkeypatch.context() as m:
        m.setattr(_p, "_sodium_scalarmult", lambda k, u: (made.append((AHEAD_DH, k, u)), dh(k, u))[1])
        m.setattr(_p, "_sodium_scalarmult_base", lambda k: (made.append((AHEAD_BASE, k)), base(k))[1])
        m.setattr(_p.MLKEM1024PrivateKey, "from_seed_bytes", staticmethod(_Key))
        yield made


@contextmanager
def _installed(table: Ahead) -> Iterator[None]:
    """``table`` installed for the calls inside (``use_ahead``), the one before it put back."""
    previous = use_ahead(table)
    try:
        yield
    finally:
        assert use_ahead(previous) is table


def _pair(seed: int) -> tuple[Device, Device, KeyStream]:
    streams = KeyStream(bytes([seed]) * 32), KeyStream(bytes([seed + 1]) * 32)
    ana = Device("ana", 1, rng=streams[0].randbytes, pq=True, deterministic=True)
    ben = Device("ben", 1, rng=streams[1].randbytes, pq=True, deterministic=True)
    ana.generate_prekeys(4, 0)
    ana.secrets.kem.forget_publics()
    bundle = ben.generate_prekeys(4, 0)
    ben.secrets.kem.forget_publics()
    ana.start_session(BEN, bundle)
    return ana, ben, streams[1]


def _decrypting(
    monkeypatch: pytest.MonkeyPatch, device: Device, peer: PeerAddress, ct: bytes
) -> list[object]:
    with _recorded(monkeypatch) as made:
        assert device.decrypt(peer, ct) == b"hello"
    return made


def test_the_exchanges_listed_ahead_are_those_decryption_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    ana, ben, ben_stream = _pair(1)
    ana_stream_peek = ana.rng.__self__.peek  # type: ignore[attr-defined]
    # Ana's first message: a PQXDH prekey message. Ben answers a new session: X3DH's four DHs on
    # Bob's side, the decapsulation (from the seed: no cache), then the DH ratchet step.
    first = ana.encrypt(BEN, b"hello")
    ahead = ben.exchanges_ahead(ANA, first, ben_stream.peek)
    assert [j[0] for j in ahead] == [AHEAD_DH] * 4 + [AHEAD_KEM] + [AHEAD_DH, AHEAD_BASE, AHEAD_DH]
    assert sorted(ahead) == sorted(_decrypting(monkeypatch, ben, ANA, first))
    # Ben's reply carries his new ratchet key: Ana's step is two DHs and her new pair's public key.
    reply = ben.encrypt(ANA, b"hello")
    ahead = ana.exchanges_ahead(BEN, reply, ana_stream_peek)
    assert len(ahead) == 3 and sorted(ahead) == sorted(_decrypting(monkeypatch, ana, BEN, reply))
    # Without a way to see the RNG's next bytes, only the exchange with the pair held now.
    again = ana.encrypt(BEN, b"hello")
    assert ben.exchanges_ahead(ANA, again) == ahead_of(ben, again)[:1]
    # A second message on the same chain makes no exchange at all, and none is listed.
    assert _decrypting(monkeypatch, ben, ANA, again)
    same_chain = ana.encrypt(BEN, b"hello")
    assert ben.exchanges_ahead(ANA, same_chain, ben_stream.peek) == []
    assert _decrypting(monkeypatch, ben, ANA, same_chain) == []


def ahead_of(device: Device, ct: bytes) -> list[tuple[object, ...]]:
    stream = device.rng.__self__  # type: ignore[attr-defined]
    return device.exchanges_ahead(ANA, ct, stream.peek)


def test_answers_held_ahead_are_taken_and_give_the_same_bytes() -> None:
    ana, ben, ben_stream = _pair(3)
    twin_ana, twin_ben, _ = _pair(3)
    first, twin_first = ana.encrypt(BEN, b"hello"), twin_ana.encrypt(BEN, b"hello")
    assert first == twin_first
    jobs = ben.exchanges_ahead(ANA, first, ben_stream.peek)
    table = _held(jobs)
    with _installed(table):
        assert ben.decrypt(ANA, first) == b"hello"
    assert twin_ben.decrypt(ANA, twin_first) == b"hello"
    assert table.hits == len(jobs) and not (table.dh or table.base or table.kem)
    assert ben.encrypt(ANA, b"reply") == twin_ben.encrypt(ANA, b"reply")  # the same state after


def test_a_table_holds_only_what_it_was_given() -> None:
    ana, ben, _ = _pair(5)
    first = ana.encrypt(BEN, b"hello")
    wrong = Ahead()
    # an answer under some other input (a guess that was wrong) is never used
    wrong.dh[(bytes(32), bytes(32))] = bytes(32)
    with _installed(wrong):
        assert ben.decrypt(ANA, first) == b"hello"
    assert wrong.hits == 0 and wrong.misses > 0 and len(wrong.dh) == 1


def test_refused_and_malformed_jobs_have_no_answer() -> None:
    k = bytes(range(32))
    zero_point = bytes(32)  # a small-order point: the all-zero shared secret, refused
    answers = compute_ahead(
        [
            (AHEAD_DH, k, zero_point),
            (AHEAD_DH, k, b"short"),
            (AHEAD_BASE, b"x"),
            (AHEAD_KEM, bytes(64), b"ct"),
            (9,),
        ]
    )
    assert answers == [None] * 5
    good = compute_ahead([(AHEAD_BASE, k), (AHEAD_DH, k, _p.x25519_pair_from_private(bytes(32)).public)])
    assert good[0] == _p.x25519_pair_from_private(k).public
    assert good[1] == _p.x25519_pair_from_private(k).dh(_p.x25519_pair_from_private(bytes(32)).public)


def test_a_guess_from_garbage_is_empty() -> None:
    _ana, ben, stream = _pair(7)
    peek: Callable[[int], bytes] = stream.peek
    for junk in (b"", b"\x00", b"\x02garbage", b"\x01" + bytes(10)):
        assert ben.exchanges_ahead(ANA, junk, peek) == []
    assert ben.exchanges_ahead(PeerAddress("nobody", 1), b"\x01" + bytes(100), peek) == []


@pytest.mark.parametrize("ben_pq", [True, False], ids=["pqxdh-ben", "x3dh-ben"])
def test_an_x3dh_prekey_message_is_listed_as_its_decryption_goes(
    monkeypatch: pytest.MonkeyPatch, ben_pq: bool
) -> None:
    """A pq=True device refuses an X3DH prekey message before any exchange (``x3dh.respond``), so
    none is listed for it; a pq=False one runs X3DH's DHs and the ratchet step, listed as made."""
    ben_stream = KeyStream(bytes([11]) * 32)
    ben = Device("ben", 1, rng=ben_stream.randbytes, pq=ben_pq, deterministic=True)
    bundle = ben.generate_prekeys(4, 4 if ben_pq else 0)
    ana = Device("ana", 1, rng=KeyStream(bytes([12]) * 32).randbytes, pq=False, deterministic=True)
    # X3DH: on Ben's bundle with its KEM prekey stripped (on the bundle as made, ana runs PQXDH)
    ana.start_session(BEN, replace(bundle, kem_prekey=None))
    first = ana.encrypt(BEN, b"hello")
    ahead = ben.exchanges_ahead(ANA, first, ben_stream.peek)
    if ben_pq:
        assert ahead == []
        with _recorded(monkeypatch) as made, pytest.raises(DecryptionError):
            ben.decrypt(ANA, first)
        assert made == []
    else:
        assert [j[0] for j in ahead] == [AHEAD_DH] * 4 + [AHEAD_DH, AHEAD_BASE, AHEAD_DH]
        assert sorted(ahead) == sorted(_decrypting(monkeypatch, ben, ANA, first))


def _held(jobs: list[tuple[object, ...]]) -> Ahead:
    """A table holding the answers of ``jobs``, as the worker's would."""
    table = Ahead()
    for job, answer in zip(jobs, compute_ahead(jobs), strict=True):
        assert answer is not None
        table.hold(job, answer)
    return table


@pytest.mark.parametrize("ana_pq", [True, False], ids=["pq-ana", "transition-ana"])
def test_the_steps_listed_for_a_new_session_are_those_starting_it_makes(
    monkeypatch: pytest.MonkeyPatch, ana_pq: bool
) -> None:
    """(A pq=False Ana runs PQXDH on Ben's bundle too: it carries a KEM prekey.)"""
    from relaysim.clients import _xeddsa

    stream = KeyStream(bytes([9]) * 32)
    ana = Device("ana", 1, rng=stream.randbytes, pq=ana_pq, deterministic=False)
    ana.generate_prekeys(4, 0)
    ben = Device("ben", 1, rng=KeyStream(bytes([10]) * 32).randbytes, pq=True)
    bundle = ben.generate_prekeys(4, 0)
    ahead, draws = ana.session_exchanges_ahead(bundle, stream.peek)
    assert draws == 2
    assert [j[0] for j in ahead] == [AHEAD_VERIFY] * 2 + [AHEAD_DH, AHEAD_ENCAPS, AHEAD_BASE] + [
        AHEAD_DH
    ] * 3 + [
        AHEAD_BASE,
        AHEAD_DH,
    ]
    assert bundle.kem_prekey is not None and (AHEAD_ENCAPS, bundle.kem_prekey.public, None) in ahead
    checked: list[tuple[object, ...]] = []
    each = _xeddsa.xeddsa_verify_each

    def verify_each(u: bytes, signed: list[tuple[bytes, bytes]]) -> list[bool]:
        checked.extend((AHEAD_VERIFY, u, m, sig) for m, sig in signed)
        return each(u, signed)

    monkeypatch.setattr(_xeddsa, "xeddsa_verify_each", verify_each)
    with _recorded(monkeypatch) as made:
        ana.start_session(BEN, bundle)
    listed = [j for j in ahead if j[0] != AHEAD_ENCAPS]
    assert sorted(listed, key=repr) == sorted(checked + made, key=repr)
    # and the answers, held, are what starting the session takes: every one of them
    twin = Device("ana", 1, rng=KeyStream(bytes([9]) * 32).randbytes, pq=ana_pq, deterministic=False)
    twin.generate_prekeys(4, 0)
    jobs, _ = twin.session_exchanges_ahead(bundle, twin.rng.__self__.peek)  # type: ignore[attr-defined]
    table = _held(jobs)
    with _installed(table):
        twin.start_session(BEN, bundle)
    assert table.hits == len(jobs) and not (table.dh or table.base or table.verified or table.encaps)
    # Ben reads the first message made with the worker's encapsulation
    assert ben.decrypt(ANA, twin.encrypt(BEN, b"hello")) == b"hello"


def test_with_a_deterministic_encapsulation_its_randomness_is_the_draw_between_the_two_pairs() -> None:
    def ana() -> Device:
        device = Device("ana", 1, rng=KeyStream(bytes([12]) * 32).randbytes, pq=True, deterministic=True)
        device.generate_prekeys(4, 0)
        return device

    ben = Device("ben", 1, rng=KeyStream(bytes([13]) * 32).randbytes, pq=True, deterministic=True)
    bundle = ben.generate_prekeys(4, 0)
    with_table, without = ana(), ana()
    jobs, draws = with_table.session_exchanges_ahead(bundle, with_table.rng.__self__.peek)  # type: ignore[attr-defined]
    assert draws == 3 and [j[0] for j in jobs].count(AHEAD_ENCAPS) == 1
    table = _held(jobs)
    with _installed(table):
        with_table.start_session(BEN, bundle)
    without.start_session(BEN, bundle)
    assert table.hits == len(jobs) and table.misses == 0
    assert with_table.encrypt(BEN, b"hello") == without.encrypt(BEN, b"hello")  # byte for byte


def test_a_forged_signature_is_never_held_as_checked() -> None:
    ben = Device("ben", 1, rng=KeyStream(bytes([11]) * 32).randbytes, pq=True)
    bundle = ben.generate_prekeys(4, 0)
    spk = bundle.signed_prekey
    from relaysim.clients import spec

    good = (AHEAD_VERIFY, bundle.identity_key, spec.encode_public_key(spk.public), spk.signature)
    forged = (AHEAD_VERIFY, bundle.identity_key, spec.encode_public_key(spk.public), bytes(64))
    assert compute_ahead([good, forged]) == [b"\x01", None]
