"""Sensitive traits from whom a person contacts, as MetaPhone inferred them from calls.

Mayer, Mutchler and Mitchell, "Evaluating the privacy properties of telephone metadata", PNAS
113(20), 2016: from call and text records alone, with the numbers labelled from public business
listings, they saw participants reach health services (57 % of participants), financial services
(40 %), pharmacies (30 %), legal services (10 %) and firearms sellers (7 %).

Here the analyst holds a public directory (account → kind of organisation, as a business listing
gives it: ``directory.json`` beside a run) and the provider's view. A person has a kind's trait if
the contact graph (sims.analysis.graph: messages, attributed sealed sends, look-ups) links them to
an account the directory lists under that kind. The directory says nothing about people; who has
which trait is what this infers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relaysim.sims.analysis.runfiles import loads, read_run_text
from relaysim.sims.analysis.view import AnalysisInputError

__all__ = ["PAPER_SHARES", "TraitReport", "read_directory", "sensitive_traits"]

# MetaPhone's headline shares of participants, by the kinds relaysim's organisations use: the scoring
# sets them beside what it finds, and a scenario's [generate] organisations draw each kind's holders at
# them unless it says otherwise (sims.scenario.organisation_kinds). The one table for both.
PAPER_SHARES: dict[str, tuple[str, float]] = {
    "clinic": ("health services", 0.57),
    "bank": ("financial services", 0.40),
    "pharmacy": ("pharmacies", 0.30),
    "lawyer": ("legal services", 0.10),
    "gunshop": ("firearms sellers", 0.07),
}


@dataclass(frozen=True)
class TraitReport:
    directory: Mapping[str, str]  # organisation account → kind (public)
    people: int  # accounts the analysis could judge (every account the view names, not in the directory)
    traits: Mapping[str, tuple[str, ...]]  # person → kinds inferred (only people with at least one)

    def holders(self, kind: str) -> set[str]:
        return {p for p, ks in self.traits.items() if kind in ks}

    def kinds(self) -> list[str]:
        return sorted(set(self.directory.values()))

    def to_json(self) -> dict[str, Any]:
        return {
            "method": "contacts with accounts a public directory lists (MetaPhone, Mayer et al., PNAS 2016)",
            "directory_accounts": len(self.directory),
            # the directory read (directory.json as it was): relaysim report compares it with the file
            "directory": dict(sorted(self.directory.items())),
            "people": self.people,
            "share_by_kind": {
                k: round(len(self.holders(k)) / self.people, 4) if self.people else None for k in self.kinds()
            },
            "traits": {p: list(ks) for p, ks in sorted(self.traits.items())},
        }


def read_directory(path: str | Path) -> dict[str, str]:
    """A public directory: a JSON object of account → kind."""
    p = Path(path)
    try:
        data = loads(read_run_text(p))
    except (OSError, ValueError) as exc:
        raise AnalysisInputError(f"{p}: cannot read it as a directory (JSON): {exc}") from None
    if not isinstance(data, dict):
        raise AnalysisInputError(f"{p}: expected an object of account → kind, got {type(data).__name__}")
    for k, v in data.items():
        if not isinstance(v, str):
            raise AnalysisInputError(f"{p}: {k}: expected a kind (a string), got {v!r}")
    return dict(data)


def sensitive_traits(
    pairs: Iterable[frozenset[str]], accounts: Iterable[str], directory: Mapping[str, str]
) -> TraitReport:
    """Each account's traits: the kinds of the directory accounts it is paired with in ``pairs``."""
    people = {a for a in accounts if a not in directory}
    traits: dict[str, set[str]] = {}
    for pair in pairs:
        if len(pair) != 2:
            continue
        a, b = sorted(pair)
        for person, other in ((a, b), (b, a)):
            if person in people and other in directory:
                traits.setdefault(person, set()).add(directory[other])
    return TraitReport(
        dict(directory), len(people), {p: tuple(sorted(ks)) for p, ks in sorted(traits.items())}
    )
