"""What the relay observes, and what a retention policy lets it keep.

Every observation is a :class:`MetadataRecord`: a kind, a time, and only fields the relay
could actually know — account and device ids it was told, the network address a connection
came from, sizes, envelope ids, the recipient. Envelope bodies never appear here.
:data:`METADATA_SCHEMA` declares, per kind, which fields a record of that kind may carry;
tests hold every record the core produces against it.

A :class:`RetentionPolicy` decides what of each observation is written to the store: which
kinds at all, which fields of them (a field the policy does not keep is never written — its
column stays NULL), at what granularity (e.g. times rounded down to the day), whether every
record is kept or only the first or latest per key (Signal keeps an account's creation time
and the day it last connected, nothing else), and for how long. Policies are plain data, so
provider profiles can be loaded from a file with :meth:`RetentionPolicy.from_dict`.
"""

from __future__ import annotations

import dataclasses
import enum
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from relaysim.relay._frozen import quick_init

__all__ = [
    "DEVICE_FACTS",
    "KEEP_EVERYTHING",
    "KEEP_NOTHING",
    "METADATA_FIELDS",
    "METADATA_SCHEMA",
    "KindRule",
    "MetadataRecord",
    "RecordKind",
    "RetentionPolicy",
]

# The facts a registration may carry about its device beyond its keys (relay.store.DeviceFacts'
# fields), which a provider may keep (relay.profiles; RelayCore(keep_device_facts=...)).
DEVICE_FACTS: Final = frozenset({"push_token", "device_type", "app_version"})


class RecordKind(enum.StrEnum):
    REGISTRATION = "registration"  # a device registered (or re-registered)
    CONNECTION = "connection"  # a network connection opened
    AUTHENTICATION = "authentication"  # a connection proved it is a device
    PREKEY_UPLOAD = "prekey_upload"  # a device uploaded prekeys
    BUNDLE_FETCH = "bundle_fetch"  # someone fetched an account's prekey bundles
    SENDER_CERTIFICATE = "sender_certificate"  # a device got a sender certificate
    SEND = "send"  # an authenticated envelope was accepted (one record per recipient device)
    SEALED_SEND = "sealed_send"  # a sealed-sender envelope was accepted (one per recipient device)
    DELIVERY = "delivery"  # an envelope was handed to a recipient device's connection
    ACKNOWLEDGEMENT = "acknowledgement"  # a device acknowledged an envelope queued to it (and removed)
    DISCONNECT = "disconnect"  # a connection closed
    CONTACT_DISCOVERY = "contact_discovery"  # a device asked which of its contacts are registered
    BLOCK = "block"  # an account blocked another


@quick_init
@dataclass(frozen=True, slots=True)
class MetadataRecord:
    """One observation. Fields the relay did not see (or a policy dropped) are None.

    - ``time``: seconds since the epoch on the relay's clock.
    - ``connection``: the relay's id for the network connection.
    - ``host``, ``port``: where that connection came from.
    - ``account``, ``device``: who acted, as far as the relay knows: the authenticated device of
      the connection (sender of a send, the device that fetched, received, acknowledged), or
      the ids named in a registration. For a sealed send, set only if the envelope came over an
      authenticated connection — the relay then knows the sender after all.
    - ``recipient_account``, ``recipient_device``: where a send goes; for bundle_fetch, the
      account whose bundle was fetched; for block, the account blocked.
    - ``envelope_id``: the relay-assigned id of the envelope concerned.
    - ``size``: the envelope body's length in bytes.
    - ``count``: for prekey_upload the keys uploaded, for bundle_fetch the bundles returned, for
      contact_discovery the contacts asked about (never which: those are not metadata here).
    """

    kind: RecordKind
    time: float | None = None
    connection: int | None = None
    host: str | None = None
    port: int | None = None
    account: str | None = None
    device: int | None = None
    recipient_account: str | None = None
    recipient_device: int | None = None
    envelope_id: bytes | None = None
    size: int | None = None
    count: int | None = None


METADATA_FIELDS: Final = tuple(f.name for f in dataclasses.fields(MetadataRecord) if f.name != "kind")
_NUMERIC: Final = frozenset({"time", "size", "count"})

_WHERE = frozenset({"time", "connection", "host", "port"})
_WHO = frozenset({"account", "device"})
_ROUTE = frozenset({"recipient_account", "recipient_device", "envelope_id", "size"})

METADATA_SCHEMA: Final[Mapping[RecordKind, frozenset[str]]] = types.MappingProxyType(
    {
        RecordKind.REGISTRATION: _WHERE | _WHO,
        RecordKind.CONNECTION: _WHERE,
        RecordKind.AUTHENTICATION: _WHERE | _WHO,
        RecordKind.PREKEY_UPLOAD: _WHERE | _WHO | {"count"},
        RecordKind.BUNDLE_FETCH: _WHERE | _WHO | {"recipient_account", "count"},
        RecordKind.SENDER_CERTIFICATE: _WHERE | _WHO,
        RecordKind.SEND: _WHERE | _WHO | _ROUTE,
        RecordKind.SEALED_SEND: _WHERE | _WHO | _ROUTE,
        RecordKind.DELIVERY: _WHERE | _WHO | {"envelope_id", "size"},
        RecordKind.ACKNOWLEDGEMENT: _WHERE | _WHO | {"envelope_id"},
        RecordKind.DISCONNECT: _WHERE | _WHO,
        RecordKind.CONTACT_DISCOVERY: _WHERE | _WHO | {"count"},
        RecordKind.BLOCK: _WHERE | _WHO | {"recipient_account"},
    }
)
"""Per kind, the fields a record of that kind may carry (``kind`` itself always)."""


@dataclass(frozen=True)
class KindRule:
    """How one kind of record is kept.

    - ``fields``: the fields written; every other field is dropped before the store sees it.
    - ``granularity``: for numeric fields (time, size, count), round down to a multiple of
      this (``{"time": 86400}`` keeps the day).
    - ``keep``: ``"all"`` appends every record; ``"first"`` keeps only the first record per
      ``key``; ``"latest"`` replaces the previous record with the same ``key``.
    - ``keep_for``: seconds after ``time`` when the record is deleted; None keeps it forever.
      Needs ``time`` among the fields (a record without a time cannot age).
    """

    fields: frozenset[str]
    granularity: Mapping[str, float] = field(default_factory=dict)
    keep: Literal["all", "first", "latest"] = "all"
    key: tuple[str, ...] = ()
    keep_for: float | None = None

    def check(self, kind: RecordKind) -> None:
        allowed = METADATA_SCHEMA[kind]
        where = f"retention rule for {kind.value!r}"
        if not self.fields <= allowed:
            raise ValueError(
                f"{where}: fields {sorted(self.fields - allowed)} are not in the schema of that kind"
            )
        for name, step in self.granularity.items():
            if name not in self.fields:
                raise ValueError(f"{where}: granularity for {name!r}, which the rule does not keep")
            if name not in _NUMERIC:
                raise ValueError(f"{where}: granularity only applies to {sorted(_NUMERIC)}, not {name!r}")
            if not step > 0:
                raise ValueError(f"{where}: granularity for {name!r} must be positive, got {step}")
        if self.keep not in ("all", "first", "latest"):
            raise ValueError(f"{where}: keep must be 'all', 'first' or 'latest', got {self.keep!r}")
        if self.keep != "all" and not self.key:
            raise ValueError(f"{where}: keep={self.keep!r} needs a key (e.g. ['account'])")
        if not set(self.key) <= self.fields:
            raise ValueError(f"{where}: key fields {sorted(set(self.key) - self.fields)} are not kept")
        if self.keep_for is not None:
            if not self.keep_for >= 0:
                raise ValueError(f"{where}: keep_for must be >= 0 seconds, got {self.keep_for}")
            if "time" not in self.fields:
                raise ValueError(f"{where}: keep_for needs 'time' among the kept fields")


def _floor(value: Any, step: float) -> Any:
    rounded = value - value % step
    return int(rounded) if isinstance(value, int) and float(step).is_integer() else rounded


@dataclass(frozen=True)
class RetentionPolicy:
    """Per kind, a :class:`KindRule`. A kind without a rule is not recorded at all."""

    name: str
    rules: Mapping[RecordKind, KindRule]
    _dropped: dict[RecordKind, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _whole: frozenset[RecordKind] = field(init=False, repr=False, compare=False)
    appended_whole: frozenset[RecordKind] = field(init=False, repr=False, compare=False)
    """Kinds whose every record is written whole and appended (no field dropped or rounded, keep
    "all"): the store takes such a record as it is, with no rule to consult (the hot path)."""

    def __post_init__(self) -> None:
        for kind, rule in self.rules.items():
            if kind not in METADATA_SCHEMA:
                raise ValueError(f"retention policy {self.name!r}: unknown record kind {kind!r}")
            rule.check(RecordKind(kind))
        # Fields a record of the kind may carry (its schema) that the rule does not keep. Fields
        # outside the schema are never set by the core (tests hold every record to the schema).
        dropped = {
            kind: tuple(f for f in METADATA_FIELDS if f in METADATA_SCHEMA[kind] and f not in rule.fields)
            for kind, rule in self.rules.items()
        }
        object.__setattr__(self, "_dropped", dropped)
        # Kinds kept whole: apply() hands those records through untouched (the common case).
        whole = frozenset(k for k, r in self.rules.items() if not dropped[k] and not r.granularity)
        object.__setattr__(self, "_whole", whole)
        appended = frozenset(k for k in whole if self.rules[k].keep == "all")
        object.__setattr__(self, "appended_whole", appended)

    def rule(self, kind: RecordKind) -> KindRule | None:
        return self.rules.get(kind)

    def apply(self, record: MetadataRecord) -> MetadataRecord | None:
        """What of ``record`` may be written: None, or the record with fields dropped and rounded."""
        if record.kind in self._whole:
            return record
        rule = self.rules.get(record.kind)
        if rule is None:
            return None
        changes: dict[str, Any] = {name: None for name in self._dropped[record.kind]}
        for name, step in rule.granularity.items():
            value = getattr(record, name)
            if value is not None:
                changes[name] = _floor(value, step)
        return dataclasses.replace(record, **changes)

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Mapping[str, Any]]) -> RetentionPolicy:
        """Build from plain data, e.g. a TOML table per kind::

        {"registration": {"fields": ["time", "account"], "keep": "first", "key": ["account"]},
         "authentication": {"fields": ["time", "account"], "granularity": {"time": 86400},
                            "keep": "latest", "key": ["account"]}}
        """
        rules: dict[RecordKind, KindRule] = {}
        for kind_name, spec in data.items():
            try:
                kind = RecordKind(kind_name)
            except ValueError:
                raise ValueError(f"retention policy {name!r}: unknown record kind {kind_name!r}") from None
            unknown = set(spec) - {"fields", "granularity", "keep", "key", "keep_for"}
            if unknown:
                raise ValueError(
                    f"retention policy {name!r}, kind {kind_name!r}: unknown settings {sorted(unknown)}"
                )
            rules[kind] = KindRule(
                fields=frozenset(spec.get("fields", METADATA_SCHEMA[kind])),
                granularity=dict(spec.get("granularity", {})),
                keep=spec.get("keep", "all"),
                key=tuple(spec.get("key", ())),
                keep_for=spec.get("keep_for"),
            )
        return cls(name, rules)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for kind, rule in self.rules.items():
            entry: dict[str, Any] = {"fields": sorted(rule.fields)}
            if rule.granularity:
                entry["granularity"] = dict(rule.granularity)
            if rule.keep != "all":
                entry["keep"] = rule.keep
                entry["key"] = list(rule.key)
            if rule.keep_for is not None:
                entry["keep_for"] = rule.keep_for
            out[kind.value] = entry
        return out


KEEP_EVERYTHING: Final = RetentionPolicy(
    "keep-everything", {kind: KindRule(fields=fields) for kind, fields in METADATA_SCHEMA.items()}
)
"""Every field of every observation, forever: the most a compelled relay could hand over."""

KEEP_NOTHING: Final = RetentionPolicy("keep-nothing", {})
"""No metadata records at all (the relay still holds accounts, keys and queued envelopes)."""
