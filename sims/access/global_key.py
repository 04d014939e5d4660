"""A global key the provider holds, as consumer BlackBerry PIN/BBM had.

``exceptional_access`` / ``global_key``: from service on, every device seals message bodies under
one AES-256-GCM key the provider holds (``relay.custody.ContentKey``) instead of running the
Double Ratchet. The provider's compliance desk is handed the key and its custody becomes
"provider", so content under any later order opens.
"""

from __future__ import annotations

from typing import Any

from relaysim.relay.custody import ContentKey
from relaysim.sims.access.base import Intervention, World
from relaysim.sims.access.reports import ExceptionalReport, global_key_markdown
from relaysim.sims.scenario import ExceptionalAccess, TimelineEvent
from relaysim.sims.world.util import seeded

__all__ = ["GlobalKey"]


class GlobalKey(Intervention):
    """The provider switches every device to one key it holds (``exceptional_access`` / ``global_key``)."""

    answers = ((ExceptionalAccess, "global_key"),)
    one_per_run = True
    order = 1

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.key: ContentKey | None = None
        self.since: float | None = None

    @property
    def started(self) -> float | None:
        return self.since

    def on_event(self, event: TimelineEvent) -> None:
        world = self.world
        if self.key is not None:
            return
        self.since = world.sched.now
        secret = seeded(world.scenario.seed, "exceptional", "global-key").randbytes(32)
        key = ContentKey("global-key", secret, "provider")
        self.key = key
        # Every device seals under it from now on, and the provider's desk holds it: its idea of
        # who holds content keys changes with the design (relay.compliance reads the custody).
        devices = world.mandate_content_key(key)
        world.emit(
            {
                "t": self.since,
                "kind": "exceptional_access",
                "demand": "global_key",
                "devices": devices,
                "key_id": key.key_id,
                "what_changes": "devices seal messages under one key the provider holds (as consumer BBM) "
                "instead of the Double Ratchet; the compliance desk holds it too",
            }
        )

    def finish(self) -> list[ExceptionalReport]:
        world = self.world
        since = self.since
        if since is None:
            return []
        orders: list[dict[str, Any]] = []
        for d in world.disclosures:
            opened = sum(1 for x in d.decryption if x["opened"])
            orders.append(
                {
                    "name": d.process.name,
                    "process": d.process.process,
                    "served": d.process.served - (world.relay.clock() - world.sched.now),
                    "ciphertexts_tried": len(d.decryption),
                    "opened": opened,
                    "content_rows": len(d.provided.get("content", [])),
                }
            )
        messages = world.messages
        after = [mid for mid, m in sorted(messages.items()) if (m.sent_at or m.planned.at) >= since]
        data = {
            "scenario": world.scenario.name,
            "global_key_since": since,
            "messages_under_global_key": after,
            "orders": orders,
        }
        markdown = global_key_markdown(data, world.scenario.name, len(messages))
        return [ExceptionalReport("global-key", data, markdown)]
