"""The statistical disclosure attack on sealed sender, from recipients and times alone.

Martiny, Kaptchuk, Aviv, Roche and Wustrow, "Improving Signal's Sealed Sender" (NDSS 2021): the
relay sees each sealed envelope's recipient and time, not its sender. Watch a target, Bob. A
*target epoch* is the short window right after Bob receives a message; a *random epoch* is one
chosen independently of Bob. Every other account gets +1 for each target epoch in which it
receives something and −1 for each random epoch in which it does. Whoever answers Bob's messages
rises to the top. In Signal the answer is immediate — the delivery receipt Bob's phone sends back
to the sender, itself a sealed message — so their epochs are one second long, and they report
linking sealed-sender users "in as few as 5 messages".

relaysim's phones send delivery receipts by default too (``[defences] receipts``). Without them
(``receipts = false`` here, for traffic whose phones send none), what falls into a target epoch is
Bob's replies, which come when a person types them: the epoch is then a minute, and a target whose
correspondents write without being answered stays hidden. Each result says which it was
(:attr:`SDAResult.receipts`). Ties are counted against the attacker,
as in the paper.

Only the recipient and time of sealed messages (and of deliveries, when the relay recorded when
the target's phone actually received them) are used: no addresses, no sizes, no senders.
Vectorised with numpy: each target costs time in proportion to the messages in its epochs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from relaysim.sims.analysis.runfiles import SDA_TOP  # the best a ranking's to_json gives, by default
from relaysim.sims.analysis.view import ProviderView

__all__ = ["SDA_TOP", "RankingBoundError", "SDAResult", "TargetRanking", "statistical_disclosure"]

CHECKPOINTS = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000)
RECEIPT_EPOCH = 1.0  # seconds: Martiny et al.'s epoch, for traffic with delivery receipts
REPLY_EPOCH = 60.0  # seconds: without receipts, replies are what there is to catch
# the targets statistical_disclosure takes when none are named (the accounts that received the most);
# runfiles.MAX_SDA_TOP, the most of the best a call is asked to keep, rests on it
MAX_TARGETS = 150
# the most bytes of rankings one statistical_disclosure call keeps (its accounts' indices and scores,
# 16 bytes an account a checkpoint): the full rankings' worst case, every account scoring at every
# checkpoint, is 150 targets x 11 checkpoints x 100,000 accounts x 16 bytes = 2.6 GB; past this bound
# the call is refused, naming keep_top, not left to run the machine out of memory
MAX_RANKING_BYTES = 1 << 30


class RankingBoundError(ValueError):
    """A statistical_disclosure call whose rankings grew past its ``max_ranking_bytes``; the message
    says how far, and names keep_top. A ValueError, so that callers catching one still do."""

    def __init__(self, message: str, kept: int, bound: int) -> None:
        super().__init__(message)
        self.kept = kept  # bytes of rankings kept when the call was refused
        self.bound = bound  # the bound they passed


@dataclass(frozen=True)
class TargetRanking:
    """One target's ranking after its first ``k`` target epochs, for each checkpoint ``k``.

    Made with ``statistical_disclosure(keep_top=N)``, it keeps per checkpoint only the N best accounts
    and the ranks of the accounts it was asked to watch (``watch``), not every account with a non-zero
    score: :meth:`top` gives at most N, and :meth:`rank` of an account neither watched nor among the N
    is refused (KeyError), unless the N were every account with a non-zero score."""

    target: str
    epochs: int  # target epochs available (messages the target received, merged within an epoch)
    population: int  # accounts that could be ranked (everyone the provider knows but the target)
    # per checkpoint k: every account with a non-zero score and its score, best first
    scores: tuple[tuple[int, tuple[tuple[str, int], ...]], ...] | None = None
    _names: Sequence[str] = ()
    _arrays: tuple[tuple[int, np.ndarray, np.ndarray], ...] = ()  # (k, account indices, scores)
    # when each target epoch began (relay clock), in order: every delivery to the target, the receipts
    # for its own messages among them (the provider cannot tell them from messages)
    starts: tuple[float, ...] = ()
    # with keep_top (else empty), per checkpoint as _arrays, which then hold only the best accounts:
    # the rank of each account watched and of each kept, and how many accounts scored non-zero
    _ranks: tuple[Mapping[str, int], ...] = ()
    _nonzero: tuple[int, ...] = ()

    def checkpoints(self) -> list[int]:
        if self.scores is not None:
            return [k for k, _ in self.scores]
        return [k for k, _, _ in self._arrays]

    def nonzero(self) -> list[int]:
        """Per checkpoint, how many accounts scored non-zero: what the full ranking keeps there (16
        bytes each), whether or not this one kept them all (keep_top counts them without keeping them)."""
        if self._nonzero:
            return list(self._nonzero)
        if self.scores is not None:
            return [len(r) for _, r in self.scores]
        return [len(idx) for _, idx, _ in self._arrays]

    def _where(self, k: int | None) -> int | None:
        """The position of checkpoint ``k`` (None: the last) in ``_arrays``; None if there is none."""
        if not self._arrays:
            if k is None:
                return None
        elif k is None:
            return len(self._arrays) - 1
        else:
            for i, (kk, _, _) in enumerate(self._arrays):
                if kk == k:
                    return i
        raise KeyError(f"no checkpoint {k} for {self.target}; have {self.checkpoints()}")

    def _at(self, k: int | None) -> tuple[list[str], np.ndarray]:
        """The accounts with a non-zero score after ``k`` target epochs (None: all of them), and the scores."""
        if self.scores is not None:
            for kk, r in self.scores if k is not None else self.scores[-1:]:
                if k is None or kk == k:
                    return [a for a, _ in r], np.array([x for _, x in r], dtype=np.int64)
        else:
            i = self._where(k)
            if i is not None:
                _, idx, sc = self._arrays[i]
                return [self._names[int(j)] for j in idx], sc
        if k is None:
            return [], np.zeros(0, dtype=np.int64)
        raise KeyError(f"no checkpoint {k} for {self.target}; have {self.checkpoints()}")

    def _cut(self, k: int | None) -> tuple[int | None, bool]:
        """With keep_top: the position of checkpoint ``k``, and whether accounts with a non-zero score
        were left out there."""
        i = self._where(k)
        return i, i is not None and self._nonzero[i] > len(self._arrays[i][1])

    def top(self, k: int | None = None, n: int = 10) -> list[tuple[str, int]]:
        if self._ranks:
            i, cut = self._cut(k)
            if cut and i is not None and n > len(self._arrays[i][1]):
                raise ValueError(
                    f"the {n} best accounts for {self.target} after {self._arrays[i][0]} target epochs: only "
                    f"the {len(self._arrays[i][1])} best were kept (statistical_disclosure(keep_top=...); "
                    "relaysim.sims.analysis.run.analyze(sda_top=...) with sda_watch)"
                )
        names, sc = self._at(k)
        return [(names[i], int(sc[i])) for i in range(min(n, len(names)))]

    def rank(self, account: str, k: int | None = None) -> int:
        """1 = first. Ties count against the attacker: the rank is how many accounts score at least as much."""
        if self._ranks:
            i, cut = self._cut(k)
            if i is not None and account in self._ranks[i]:
                return self._ranks[i][account]
            if cut and i is not None:
                raise KeyError(
                    f"the rank of {account!r} for {self.target} after {self._arrays[i][0]} target epochs was "
                    f"not kept: only the best {len(self._arrays[i][1])} and the accounts watched were "
                    "(statistical_disclosure(watch=...))"
                )
        names, sc = self._at(k)
        where = [i for i, a in enumerate(names) if a == account]
        mine = int(sc[where[0]]) if where else 0
        return _rank(sc, mine, self.population)

    def only(self, checkpoints: Collection[int]) -> TargetRanking:
        """The same ranking at the checkpoints of ``checkpoints`` and the last alone: what
        ``statistical_disclosure(checkpoints=...)`` gives, from a call that had a checkpoint after every
        target epoch (``relaysim analyze`` scores both from one pass)."""
        ks = self.checkpoints()
        keep = [i for i, k in enumerate(ks) if k in checkpoints or i == len(ks) - 1]
        return replace(
            self,
            scores=None if self.scores is None else tuple(self.scores[i] for i in keep),
            _arrays=tuple(self._arrays[i] for i in keep) if self._arrays else (),
            _ranks=tuple(self._ranks[i] for i in keep) if self._ranks else (),
            _nonzero=tuple(self._nonzero[i] for i in keep) if self._nonzero else (),
        )

    def to_json(self, top: int = SDA_TOP) -> dict[str, Any]:
        return {
            "target": self.target,
            "target_epochs": self.epochs,
            "population": self.population,
            "top_after_k": {str(k): [list(x) for x in self.top(k, top)] for k in self.checkpoints()},
        }


def _rank(sc: np.ndarray, mine: int, population: int) -> int:
    """The rank of a score ``mine`` among the non-zero scores ``sc`` of ``population`` accounts: how many
    score at least as much (ties against the attacker), every account scoring zero among them when
    ``mine`` is not positive."""
    above = int((sc >= mine).sum())
    if mine <= 0:
        above += population - len(sc)  # every account scoring zero
    return max(1, above)


@dataclass(frozen=True)
class SDAResult:
    epoch: float
    receipts: bool
    sealed_messages: int
    triggers: str  # "delivery" or "sealed_send": what marks the target receiving
    rankings: tuple[TargetRanking, ...]

    def note(self) -> str:
        if not self.sealed_messages:
            return (
                "not run: no sealed sends in these records (with sealed sender off each record names its sender, "
                "and the contact graph is read off them; or the profile keeps none of the sealed sends it saw)"
            )
        if self.receipts:
            return (
                f"target epochs of {self.epoch:g} s after each message to the target: the delivery receipt its "
                "phone sends back falls in them (Martiny et al., NDSS 2021)"
            )
        return (
            f'assuming no delivery receipts (phones with [defences] receipts = "off"): the attack works on the '
            f"messages alone, with target epochs of {self.epoch:g} s after each message to the target, in which "
            "the target's replies fall"
        )

    def only(self, checkpoints: Collection[int]) -> SDAResult:
        """Each ranking at the checkpoints of ``checkpoints`` and its last alone (:meth:`TargetRanking.only`)."""
        return replace(self, rankings=tuple(r.only(checkpoints) for r in self.rankings))

    def to_json(self, top: int = SDA_TOP) -> dict[str, Any]:
        return {
            "method": "statistical disclosure attack (Martiny et al., NDSS 2021): recipients and times only",
            "epoch_s": self.epoch,
            "receipts": self.receipts,
            "note": self.note(),
            "sealed_messages": self.sealed_messages,
            "target_epochs_from": self.triggers,
            "targets": [r.to_json(top) for r in self.rankings],
        }


def _messages(view: ProviderView) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """Sealed messages as (time, recipient index), one per (time, recipient account)."""
    seen: set[tuple[float, str]] = set()
    names: dict[str, int] = {}
    rows: list[tuple[float, int]] = []
    for o in view.observations:
        if not o.sealed or o.time is None or o.recipient_account is None:
            continue
        key = (o.time, o.recipient_account)
        if key in seen:
            continue  # the same message's record for another of the recipient's devices
        seen.add(key)
        rows.append((o.time, names.setdefault(o.recipient_account, len(names))))
    for a in sorted(view.accounts()):
        names.setdefault(a, len(names))
    arr = np.array(rows, dtype=np.float64).reshape(-1, 2)
    arr = arr[np.argsort(arr[:, 0], kind="stable")]
    index = [""] * len(names)
    for a, i in names.items():
        index[i] = a
    return arr, index, names


def _merge(times: np.ndarray, epoch: float) -> np.ndarray:
    """Trigger times with any falling inside the previous one's epoch dropped."""
    out: list[float] = []
    for t in np.sort(times):
        if not out or t >= out[-1] + epoch:
            out.append(float(t))
    return np.array(out, dtype=np.float64)


def _epoch_pairs(
    times: np.ndarray, recv: np.ndarray, starts: np.ndarray, epoch: float, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each (epoch, account) in which the account received something, once, sorted by epoch: the
    epochs' positions in ``starts`` and the accounts, as two arrays."""
    lo = np.searchsorted(times, starts, side="left")
    hi = np.searchsorted(times, starts + epoch, side="left")
    lengths = hi - lo
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    epoch_of = np.repeat(np.arange(len(starts), dtype=np.int64), lengths)
    offsets = np.repeat(lo - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    idx = np.arange(total, dtype=np.int64) + offsets
    keys = np.unique(epoch_of * n + recv[idx])  # one per (epoch, account), sorted by epoch
    del epoch_of, offsets, idx
    return keys // n, keys % n


def _epoch_counts(
    times: np.ndarray, recv: np.ndarray, starts: np.ndarray, epoch: float, n: int, ks: Sequence[int]
) -> Iterator[np.ndarray]:
    """Per checkpoint k of ``ks`` (ascending), in turn: per account, in how many of the first k epochs it
    received something. One running count, added to between checkpoints and yielded at each (the same
    array: read it before asking for the next), so a checkpoint after every epoch holds one array of
    the accounts, not one per checkpoint (at 100,000 accounts, 800 kB, where 1,000 checkpoints held
    800 MB)."""
    counts = np.zeros(n, dtype=np.int64)
    ep, users = _epoch_pairs(times, recv, starts, epoch, n)
    done = 0
    for k in ks:
        upto = int(np.searchsorted(ep, k, side="left"))  # the (epoch, account) pairs of the first k epochs
        np.add.at(counts, users[done:upto], 1)
        done = upto
        yield counts


def _kept_rankings(
    hits: tuple[np.ndarray, np.ndarray],
    noise: tuple[np.ndarray, np.ndarray],
    n: int,
    population: int,
    ks: Sequence[int],
    skip: int | None,
    keep_top: int,
    watched: Sequence[int | None],
    top_at: Collection[int] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, list[int], int]]:
    """``keep_top``'s rankings, per checkpoint k of ``ks`` (ascending), in turn: the ``keep_top`` best
    accounts and their scores (best first, ties by account index), the ranks of those and of the
    ``watched`` accounts (None: an account the view does not name, scoring zero) as ``rank()`` gives
    them among ``population`` accounts, and how many accounts scored non-zero; the account ``skip``
    (the target) always scores zero. With ``top_at``, the ``keep_top`` best only at its checkpoints
    (none elsewhere: the ranks of the ``watched`` alone).

    What the full ranking gives, without ranking every account at every checkpoint: each checkpoint
    updates the scores of the accounts that received something in its new epochs alone, and a count
    of accounts per score, from which a rank is a sum over the scores above it (at most 2k + 1 of
    them), not a pass over the accounts. Only the ``keep_top`` best, when asked for, take a pass over
    the accounts at the score that admits them."""
    kmax = max(ks, default=0)
    off = kmax  # scores after k epochs lie in [-k, k]: the count of accounts per score, score + off
    sc = np.zeros(n, dtype=np.int64)
    per_score = np.zeros(2 * kmax + 1, dtype=np.int64)
    per_score[off] = n
    (hit_ep, hit_users), (noise_ep, noise_users) = hits, noise
    h_done = z_done = 0
    named = np.array([i is not None for i in watched], dtype=bool)
    where = np.array([i if i is not None else 0 for i in watched], dtype=np.int64)
    for k in ks:
        h_upto = int(np.searchsorted(hit_ep, k, side="left"))
        z_upto = int(np.searchsorted(noise_ep, k, side="left"))
        idx = np.concatenate((hit_users[h_done:h_upto], noise_users[z_done:z_upto]))
        step = np.concatenate(
            (np.ones(h_upto - h_done, dtype=np.int64), np.full(z_upto - z_done, -1, dtype=np.int64))
        )
        h_done, z_done = h_upto, z_upto
        if skip is not None:
            mask = idx != skip
            idx, step = idx[mask], step[mask]
        touched = np.unique(idx)
        np.subtract.at(per_score, sc[touched] + off, 1)
        np.add.at(sc, idx, step)
        np.add.at(per_score, sc[touched] + off, 1)
        nonzero = n - int(per_score[off])
        # at_least[s + off]: how many accounts with a non-zero score score s or more
        scored = per_score.copy()
        scored[off] = 0
        at_least = np.cumsum(scored[::-1])[::-1]
        best = np.zeros(0, dtype=np.int64)
        if keep_top and (top_at is None or k in top_at):
            if nonzero <= keep_top:
                pool = np.flatnonzero(sc)
            else:
                # the highest score at which keep_top accounts score at least as much admits them all
                floor = int(np.flatnonzero(at_least >= keep_top)[-1]) - off
                pool = np.flatnonzero(sc >= floor) if floor > 0 else np.flatnonzero((sc >= floor) & (sc != 0))
            best = pool[np.lexsort((pool, -sc[pool]))][:keep_top]
        mine = np.concatenate((sc[best], np.where(named, sc[where], 0)))
        above = at_least[mine + off] + np.where(mine <= 0, population - nonzero, 0)
        yield best, sc[best], np.maximum(1, above).tolist(), nonzero


def _count_kept(
    kept: int, idx: np.ndarray, sc: np.ndarray, most: int, target: str, k: int, keep_top: int | None
) -> int:
    """``kept`` bytes of rankings and a checkpoint's ``idx`` and ``sc``; a ValueError past ``most``."""
    kept += idx.nbytes + sc.nbytes
    if kept > most:
        how = (
            "keep_top=N (and watch=...) to keep only the N best accounts and the ranks of the accounts watched"
            if keep_top is None
            else f"a smaller keep_top than {keep_top}"
        )
        raise RankingBoundError(
            f"max_ranking_bytes: the rankings kept reached {kept:,} bytes at {target!r}'s checkpoint {k}, "
            f"past the bound of {most:,} bytes; ask for {how}, or for fewer targets or checkpoints",
            kept,
            most,
        )
    return kept


def statistical_disclosure(
    view: ProviderView,
    *,
    targets: Iterable[str] | None = None,
    receipts: bool = False,
    epoch: float | None = None,
    checkpoints: Sequence[int] = CHECKPOINTS,
    max_targets: int = MAX_TARGETS,
    min_epochs: int = 5,
    seed: int = 0,
    keep_top: int | None = None,
    watch: Mapping[str, Collection[str]] | None = None,
    max_ranking_bytes: int | None = None,
    top_at: Collection[int] | None = None,
) -> SDAResult:
    """Rank every account as a correspondent of each target. Without ``targets``, the ``max_targets``
    accounts that received the most sealed messages (at least ``min_epochs``).

    Each ranking keeps, per checkpoint, every account with a non-zero score; with ``keep_top`` (a
    whole number, 0 or more), only the ``keep_top`` best, and the ranks of the accounts ``watch``
    gives per target: what a caller needs of a checkpoint after every target epoch at scale (a
    checkpoint's every non-zero account, 16 bytes each, times one checkpoint per epoch). With
    ``top_at`` too, the ``keep_top`` best only at the checkpoints of ``top_at`` and each target's last,
    and at the others the ranks of the accounts watched alone: one call gives both a checkpoint after
    every target epoch for the accounts watched and the best at a few checkpoints
    (:meth:`SDAResult.only` takes those few out).

    The rankings kept, over every target, may hold at most ``max_ranking_bytes`` (None, the default:
    :data:`MAX_RANKING_BYTES` as it is when called, 1 GiB): a call whose rankings grow past it is
    refused (:class:`RankingBoundError`, a ValueError naming keep_top) as soon as they do."""
    if keep_top is not None and keep_top < 0:
        raise ValueError(f"keep_top: expected 0 or more accounts, got {keep_top}")
    if max_ranking_bytes is None:
        max_ranking_bytes = MAX_RANKING_BYTES
    if max_ranking_bytes < 0:
        raise ValueError(f"max_ranking_bytes: expected 0 or more bytes, got {max_ranking_bytes}")
    kept_bytes = 0
    eps = epoch if epoch is not None else (RECEIPT_EPOCH if receipts else REPLY_EPOCH)
    arr, index, names = _messages(view)
    n = len(index)
    times = np.ascontiguousarray(arr[:, 0])
    recv = arr[:, 1].astype(np.int64)
    deliveries: dict[str, list[float]] = {}
    for o in view.of_kind("delivery"):
        if o.account is not None and o.time is not None:
            deliveries.setdefault(o.account, []).append(o.time)
    triggers = "delivery" if deliveries else "sealed_send"
    if deliveries:
        per_target = {a: np.array(v) for a, v in deliveries.items()}
    else:
        # group the (time-sorted) messages by recipient in one sort, not one scan per recipient
        order = np.argsort(recv, kind="stable")
        ids, first = np.unique(recv[order], return_index=True)
        groups = np.split(times[order], first[1:])
        per_target = {index[int(i)]: g for i, g in zip(ids, groups, strict=True)} if len(recv) else {}
    merged: dict[str, np.ndarray] = {}
    wanted = set(targets) if targets is not None else None
    # merging epochs only shortens a list: visit recipients by raw count, stop once none can catch up
    for a in sorted(per_target, key=lambda a: (-len(per_target[a]), a)):
        if wanted is not None and a not in wanted:
            continue
        if wanted is None:
            full = sorted((len(v) for v in merged.values() if len(v) >= min_epochs), reverse=True)
            if len(per_target[a]) < min_epochs or (
                len(full) >= max_targets and len(per_target[a]) < full[max_targets - 1]
            ):
                break
        merged[a] = _merge(per_target[a], eps)
    if not len(times):  # no sealed messages: nothing for this attack to do
        return SDAResult(eps, receipts, 0, triggers, ())
    if targets is None:
        chosen = sorted(
            (a for a in merged if len(merged[a]) >= min_epochs), key=lambda a: (-len(merged[a]), a)
        )
        chosen = chosen[:max_targets]
    else:
        chosen = list(targets)
    lo_t = float(times[0]) if len(times) else 0.0
    hi_t = float(times[-1]) if len(times) else 0.0
    rankings = []
    population = max(0, n - 1)
    for target in chosen:
        starts = merged.get(target, np.zeros(0))
        kmax = len(starts)
        ks = sorted({k for k in checkpoints if k < kmax} | ({kmax} if kmax else set()))
        rng = np.random.default_rng([seed, *target.encode()])
        # random epochs in the order drawn: the first k of them are k independent draws
        random_starts = rng.uniform(lo_t, max(lo_t, hi_t - eps), size=kmax)
        arrays: list[tuple[int, np.ndarray, np.ndarray]] = []
        ranks: list[Mapping[str, int]] = []
        nonzero: list[int] = []
        t_index = names.get(target)
        if keep_top is not None:
            watched = sorted(set((watch or {}).get(target, ())))
            kept_rankings = _kept_rankings(
                _epoch_pairs(times, recv, starts, eps, n),
                _epoch_pairs(times, recv, random_starts, eps, n),
                n,
                population,
                ks,
                t_index,
                keep_top,
                [names.get(a) for a in watched],
                None if top_at is None else {*top_at, kmax},
            )
            for k, (best, scores, above, count) in zip(ks, kept_rankings, strict=True):
                who = [index[int(i)] for i in best] + watched
                arrays.append((k, best, scores))
                ranks.append(dict(zip(who, above, strict=True)))
                nonzero.append(count)
                kept_bytes = _count_kept(kept_bytes, best, scores, max_ranking_bytes, target, k, keep_top)
        else:
            hits = _epoch_counts(times, recv, starts, eps, n, ks)
            noise = _epoch_counts(times, recv, random_starts, eps, n, ks)
            for k, h, z in zip(ks, hits, noise, strict=True):
                sc = h - z  # a new array: the running counts go on changing
                if t_index is not None:
                    sc[t_index] = 0
                nz = np.flatnonzero(sc)
                order = np.lexsort((nz, -sc[nz]))  # best first; ties by account index
                arrays.append((k, nz[order], sc[nz][order]))
                kept_bytes = _count_kept(kept_bytes, *arrays[-1][1:], max_ranking_bytes, target, k, keep_top)
        rankings.append(
            TargetRanking(
                target,
                kmax,
                population,
                None,
                index,
                tuple(arrays),
                tuple(float(t) for t in starts),
                tuple(ranks),
                tuple(nonzero),
            )
        )
    return SDAResult(eps, receipts, len(times), triggers, tuple(rankings))
