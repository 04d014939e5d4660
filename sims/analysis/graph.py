"""Who talks to whom: the contact graph the provider's records draw.

Evidence, strongest first: a message whose record names both ends (``message``); a sealed-sender
message whose sender an attribution inferred (``attributed``, see :mod:`sims.analysis.attribution`);
a look-up of someone's prekey bundle — the step before a first message, but not a message
(``lookup``); an address book the provider holds (``address_book``). Each edge is undirected and
weighted by volume; an edge seen only by look-ups or address books is marked as weaker evidence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import networkx as nx

from relaysim.sims.analysis.view import ProviderView

__all__ = ["ContactEdge", "ContactGraph", "contact_graph"]


@dataclass(frozen=True, slots=True)
class ContactEdge:
    a: str
    b: str  # a < b
    messages: int  # messages either way whose records name both ends
    attributed: int  # sealed-sender messages whose sender was inferred
    lookups: int  # prekey-bundle look-ups either way
    address_book: bool  # one of them has the other in an address book the provider holds

    @property
    def evidence(self) -> str:
        """``message`` (strong), ``attributed`` (inferred), or ``lookup`` / ``address_book`` (weaker)."""
        if self.messages:
            return "message"
        if self.attributed:
            return "attributed"
        return "lookup" if self.lookups else "address_book"

    @property
    def weight(self) -> int:
        return self.messages + self.attributed

    def to_json(self) -> dict[str, Any]:
        return {
            "between": [self.a, self.b],
            "messages": self.messages,
            "attributed": self.attributed,
            "lookups": self.lookups,
            "address_book": self.address_book,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class ContactGraph:
    edges: tuple[ContactEdge, ...]

    def strong(self) -> set[frozenset[str]]:
        """Pairs with a message (named or attributed) between them."""
        return {frozenset((e.a, e.b)) for e in self.edges if e.weight}

    def all_pairs(self) -> set[frozenset[str]]:
        return {frozenset((e.a, e.b)) for e in self.edges}

    def neighbours(self, account: str) -> list[tuple[str, int]]:
        """Accounts linked to ``account``, heaviest first."""
        out = [(e.b if e.a == account else e.a, e.weight) for e in self.edges if account in (e.a, e.b)]
        return sorted(out, key=lambda x: (-x[1], x[0]))

    def to_networkx(self) -> Any:
        g = nx.Graph()
        for e in self.edges:
            g.add_edge(e.a, e.b, weight=e.weight, lookups=e.lookups, evidence=e.evidence)
        return g

    def to_json(self) -> dict[str, Any]:
        g = self.to_networkx()
        components = sorted((len(c) for c in nx.connected_components(g)), reverse=True) if len(g) else []
        return {
            "accounts": g.number_of_nodes(),
            "edges": len(self.edges),
            "edges_by_evidence": {
                k: sum(1 for e in self.edges if e.evidence == k)
                for k in ("message", "attributed", "lookup", "address_book")
            },
            "largest_component": components[0] if components else 0,
            "edge_list": [e.to_json() for e in self.edges],
        }


def contact_graph(view: ProviderView, attributed: Iterable[tuple[str, str]] = ()) -> ContactGraph:
    """The graph from message logs, look-up logs and address books in ``view``. ``attributed``:
    (sender, recipient) of sealed-sender messages whose sender was inferred."""
    counts: dict[tuple[str, str], list[int]] = {}

    def bump(x: str | None, y: str | None, slot: int) -> None:
        if x is None or y is None or x == y:
            return
        key = (x, y) if x < y else (y, x)
        counts.setdefault(key, [0, 0, 0, 0])[slot] += 1

    seen: set[tuple[object, ...]] = set()
    for o in view.observations:
        if o.kind in ("send", "sealed_send") and o.account is not None:
            # one record per recipient device: a message is one (time, sender, recipient)
            key = (o.time, o.account, o.recipient_account)
            if o.time is not None and key in seen:
                continue
            seen.add(key)
            bump(o.account, o.recipient_account, 0)
        elif o.kind == "bundle_fetch":
            bump(o.account, o.recipient_account, 2)
    for sender, recipient in attributed:
        bump(sender, recipient, 1)
    for account, book in view.address_books.items():
        for c in book:
            bump(account, c, 3)
    edges = tuple(
        ContactEdge(a, b, m, at, lk, bool(ab)) for (a, b), (m, at, lk, ab) in sorted(counts.items())
    )
    return ContactGraph(edges)
