"""Every analysis on one provider view, and on a finished run's outputs.

``analyze(view)`` runs them all and returns an :class:`Analysis` (inferred facts only);
``analyze_run(DIR)`` does so for what a finished run's provider holds: its ``relay.db`` as
recorded under the run's profile (``provider.json`` names it, and holds the provider's GeoIP
table), and each disclosure package in ``disclosures/``. Scoring against ground truth is
elsewhere (``sims.analysis_scoring``): nothing here reads the transcript or the scenario.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relaysim.relay.profiles import get_profile
from relaysim.sims.analysis.attribution import Attribution, attribute_sealed
from relaysim.sims.analysis.attribution import summary as attribution_summary
from relaysim.sims.analysis.graph import ContactGraph, contact_graph
from relaysim.sims.analysis.life import Colocation, Rhythm, Stay, colocation, daily_rhythm, location_trail
from relaysim.sims.analysis.runfiles import (
    MAX_SDA_TOP,
    brief,
    read_provider,
    relay_clock,
    run_subfolder_problem,
)
from relaysim.sims.analysis.sda import CHECKPOINTS, SDA_TOP, SDAResult, statistical_disclosure
from relaysim.sims.analysis.sizes import SizeReport, size_channels
from relaysim.sims.analysis.traits import TraitReport, read_directory, sensitive_traits
from relaysim.sims.analysis.view import (
    RELAY_VIEW_FILE,
    AnalysisInputError,
    ProviderView,
    from_db,
    from_disclosure,
    from_relay_view,
    on_run_clock,
    with_geoip,
)

__all__ = ["Analysis", "analyze", "analyze_run", "as_seen_view", "run_clock", "run_views"]


@dataclass(frozen=True)
class Analysis:
    source: str
    target: str | None
    attributions: tuple[Attribution, ...]
    graph: ContactGraph
    sda: SDAResult
    sizes: SizeReport
    rhythms: tuple[Rhythm, ...]
    trails: dict[str, list[Stay]]
    colocations: tuple[Colocation, ...]
    traits: TraitReport | None = None  # with a public directory of organisations (sims.analysis.traits)
    # with analyze(sda_watch=...): the attack's rankings with a checkpoint after every target epoch, of
    # which ``sda`` is the few checkpoints (the same pass), and the accounts whose ranks they kept
    sda_every_epoch: SDAResult | None = None
    sda_watch: Mapping[str, Collection[str]] | None = None
    sda_top: int = SDA_TOP  # the best accounts per checkpoint its JSON gives (analyze(sda_top=...))

    def to_json(self) -> dict[str, Any]:
        out = self._to_json()
        if self.traits is not None:
            out["sensitive_traits"] = self.traits.to_json()
        return out

    def _to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "sealed_sender_attribution": {
                **attribution_summary(self.attributions),
                "attributions": [a.to_json() for a in self.attributions],
            },
            "contact_graph": self.graph.to_json(),
            "statistical_disclosure": self.sda.to_json(self.sda_top),
            "sizes": self.sizes.to_json(),
            "pattern_of_life": {
                "daily_rhythm": [r.to_json() for r in self.rhythms],
                "location_trail": {a: [s.to_json() for s in v] for a, v in self.trails.items()},
                "colocation": [c.to_json() for c in self.colocations],
            },
        }


AUTOMATIC = 2.0  # seconds: a send this soon after something arrived for the account is taken for a receipt


def analyze(
    view: ProviderView,
    *,
    sda_targets: list[str] | None = None,
    sda_epoch: float | None = None,
    sda_receipts: bool = True,
    directory: Mapping[str, str] | None = None,
    sda_watch: Mapping[str, Collection[str]] | None = None,
    sda_top: int = SDA_TOP,
) -> Analysis:
    """Every analysis on ``view``. ``sda_receipts``: the analyst assumes, as Martiny et al. do, that
    the app sends a delivery receipt for every message (Signal's always do: public behaviour of the
    app, not a fact about these people), so the disclosure attack uses one-second epochs.
    ``directory``: a public list of organisation accounts (account → kind) to infer sensitive traits.

    ``sda_watch`` (target → accounts; a scorer's, who knows each target's true contacts): the attack
    runs once, with a checkpoint after every target epoch keeping the ranks of those accounts, and the
    ``sda_top`` best at the attack's usual checkpoints, of which ``sda`` is made
    (:meth:`~sims.analysis.sda.SDAResult.only`: what the attack gives without it, to the byte, up to the
    ``sda_top`` best); ``sda_every_epoch`` holds the whole, for the scorer's "linked" count, which would
    otherwise take the attack a second time. What is inferred does not change; only which ranks are kept.

    ``sda_top`` (default :data:`~sims.analysis.sda.SDA_TOP`, 10): how many of the best accounts per
    checkpoint the analysis gives (its JSON's ``top_after_k``) and, with ``sda_watch``, the most it keeps:
    ``a.sda.top(k, n)`` or ``a.sda.to_json(top=n)`` for more than ``sda_top`` is then refused, so ask
    for them here. From 1 to :data:`~sims.analysis.runfiles.MAX_SDA_TOP` (10,000), as
    ``relaysim analyze --sda-top`` takes it: else a ValueError naming sda_top."""
    if isinstance(sda_top, bool) or not isinstance(sda_top, int) or not 1 <= sda_top <= MAX_SDA_TOP:
        # what relaysim analyze --sda-top refuses: 0 gave rankings naming no one, and past MAX_SDA_TOP
        # (which says why) the rankings kept could outgrow what one call of the attack may keep
        raise ValueError(
            f"sda_top: expected a whole number of accounts from 1 to {MAX_SDA_TOP:,}, got {brief(sda_top)}"
        )
    attributions = tuple(attribute_sealed(view))
    messages: dict[tuple[float | None, str, str], None] = {}
    for a in attributions:
        if a.sender is not None and a.recipient is not None:
            messages[(a.time, a.sender, a.recipient)] = None  # a record per recipient device: once
    graph = contact_graph(view, [(s, r) for _, s, r in messages])
    every_epoch = None
    if sda_watch is None:
        sda = statistical_disclosure(view, targets=sda_targets, epoch=sda_epoch, receipts=sda_receipts)
    else:
        every_epoch = statistical_disclosure(
            view,
            targets=sda_targets,
            epoch=sda_epoch,
            receipts=sda_receipts,
            checkpoints=range(1, len(view.observations) + 2),
            keep_top=sda_top,
            watch=sda_watch,
            top_at=CHECKPOINTS,
        )
        sda = every_epoch.only(CHECKPOINTS)
    sizes = size_channels(view, {a.envelope_id: a.sender for a in attributions if a.envelope_id and a.sender})
    rhythms = tuple(
        daily_rhythm(
            view,
            [(s, t) for t, s, _ in messages if t is not None],
            automatic=AUTOMATIC if sda_receipts else None,
        )
    )
    return Analysis(
        view.source,
        view.target,
        attributions,
        graph,
        sda,
        sizes,
        rhythms,
        location_trail(view),
        tuple(colocation(view)),
        sensitive_traits(graph.all_pairs(), view.accounts(), directory) if directory else None,
        every_epoch,
        sda_watch,
        sda_top,
    )


def _provider(run: Path) -> dict[str, Any]:
    try:  # (a live run's folder made before live runs wrote one: none, the records read as recorded)
        return read_provider(run / "provider.json") or {}
    except ValueError as exc:
        raise AnalysisInputError(str(exc)) from None


def run_clock(run: str | Path) -> Callable[[float], float]:
    """The relay's times of the finished run in folder ``run`` read on the run's own clock
    (runfiles.relay_clock of its provider.json): a live run's relay kept the wall clock."""
    return relay_clock(_provider(Path(run)))


def run_views(run: str | Path) -> dict[str, ProviderView]:
    """What the provider of a finished run holds, by name: ``relay`` (its database) and each disclosure,
    their times on the run's own clock (:func:`run_clock`; a live run's relay kept the wall clock, and a
    disclosure keeps the relay's)."""
    out = Path(run)
    provider = _provider(out)  # (its fields checked: runfiles.provider_problem)
    to_run = relay_clock(provider)
    geoip = provider.get("geoip", {})
    profile_name = provider.get("profile")  # (a name, or None: no provider.json)
    try:
        profile = get_profile(profile_name) if isinstance(profile_name, str) else None
    except ValueError as exc:
        raise AnalysisInputError(f"{out / 'provider.json'}: profile: {exc}") from None
    problem = run_subfolder_problem(out, "disclosures")
    if problem is not None:  # (a file there: no disclosure analysed, saying nothing)
        raise AnalysisInputError(problem)
    views = {"relay": on_run_clock(from_db(out / "relay.db", profile, geoip=geoip), to_run)}
    for f in sorted((out / "disclosures").glob("*.json")):
        views[f.stem] = on_run_clock(with_geoip(from_disclosure(f), geoip), to_run)
    return views


def as_seen_view(run: str | Path) -> ProviderView:
    """What the relay of a finished run saw while it ran (``relay-view.jsonl``), with the provider's
    GeoIP table: the input of ``relaysim analyze DIR --as-seen``."""
    out = Path(run)
    provider = _provider(out)
    view = from_relay_view(out / RELAY_VIEW_FILE, geoip=provider.get("geoip", {}))
    return on_run_clock(view, relay_clock(provider))  # (a live run writes none: the one clock all the same)


def run_directory(run: str | Path) -> dict[str, str] | None:
    """The public directory of organisation accounts beside a run (``directory.json``), if any."""
    f = Path(run) / "directory.json"
    return read_directory(f) if f.exists() else None


def directory_problems(
    run: str | Path, directory: Mapping[str, str], accounts: Collection[str], kinds: Collection[str]
) -> list[str]:
    """Check the run's ``directory.json`` (read as ``directory``) against the run: an
    AnalysisInputError naming the first kind of organisation no scenario knows, and the kinds known (a
    kind of its own was inferred as a trait, saying nothing: a typo read as one more trait); the
    accounts it lists that are none of ``accounts`` (the accounts the run's records name), one line
    naming them, for a warning (they were passed over, saying nothing). A kind is known if a scenario
    may name it without a share (``kinds``: the caller's, sims.scenario.organisation_kinds, which this
    module may not import: it knows the scenario), or if the run has one of its accounts as relaysim
    names an organisation's, ``KIND-N`` (a kind a scenario gives a trait_probability of its own).
    And an account of the run it lists that is not named so (a person's), for a warning: the trait
    inferences leave it out of the people they judge."""
    import re

    path = Path(run) / "directory.json"
    known = list(kinds)
    own = {
        kind
        for account, kind in directory.items()
        if account in accounts and re.fullmatch(rf"{re.escape(kind)}-[1-9][0-9]*", account)
    }
    for account, kind in directory.items():
        if kind not in known and kind not in own:
            raise AnalysisInputError(
                f"{path}: {brief(account, 's')}: unknown kind of organisation {brief(kind)} (known: {', '.join(known)}, or a "
                "scenario's own kind, whose accounts the run has as KIND-1, KIND-2, …)"
            )
    problems = []
    missing = sorted(a for a in directory if a not in accounts)
    if missing:
        problems.append(
            f"{path}: lists {len(missing)} account{'s' if len(missing) != 1 else ''} the run's records name "
            f"nowhere ({_listed(missing)}): passed over in the trait inferences"
        )
    # An account of the run listed as an organisation, not named as relaysim names one (KIND-N: a
    # person's, as amira's): taken for an organisation, it was left out of the people the trait
    # inferences judge (sims.analysis.traits: every account not in the directory), saying nothing.
    people = sorted(
        account
        for account, kind in directory.items()
        if account in accounts and not re.fullmatch(rf"{re.escape(kind)}-[1-9][0-9]*", account)
    )
    if people:
        one = len(people) == 1
        problems.append(
            f"{path}: lists {len(people)} account{'' if one else 's'} of the run as "
            f"{'an organisation' if one else 'organisations'}, not named as relaysim names one (KIND-1, "
            f"KIND-2, …: {'a person' if one else 'people'}) ({_listed(people)}): "
            f"{'it is' if one else 'they are'} left out of the people judged in the trait inferences"
        )
    return problems


def _listed(accounts: list[str]) -> str:
    """The first 8 of ``accounts``, shown cut, and how many in all."""
    return ", ".join(brief(a) for a in accounts[:8]) + (
        f", … ({len(accounts)} in all)" if len(accounts) > 8 else ""
    )


def analyze_run(run: str | Path) -> dict[str, Analysis]:
    directory = run_directory(run)
    return {name: analyze(view, directory=directory) for name, view in run_views(run).items()}
