"""Backups, the second door: a cloud custodian that holds a phone's message history.

End-to-end encryption keeps content off the relay, but a phone that backs up its message
database to the cloud puts the history with a second party, served with its own search warrant
(18 U.S.C. 2703(a)). Whether that custodian can read the backup depends on who holds its key:

- iCloud Backup holds the Messages key unless Advanced Data Protection is on (Apple, ADP from
  December 2022; withdrawn for new UK users in February 2025 after a UK technical capability
  notice). The FBI's "Lawful Access" chart (2021-01-07): a search warrant on Apple gets device
  backups, "with iCloud Backup the keys come too".
- WhatsApp backs up to iCloud or Google Drive, readable by that custodian unless the user turned
  on end-to-end encrypted backups (from October 2021).

This is why the chart's message-content column reads "limited" for iMessage and WhatsApp: not from
the relay; from the backup, unless the user turned on end-to-end backups.

:data:`BACKUPS` is the per-person switch (``backup = "icloud"`` in a scenario's ``[[people]]``);
a profile's ``backup`` is its users' default. :func:`disclose_backup` answers a ``backup_warrant``
from the history the phone held at service (what it sent and what it received, as plaintext: the
backup is a copy of the phone's database), limited to the warrant's ``from``/``to`` when it gives
them: a warrant "particularly describ[es] ... the things to be seized" (U.S. Const. amend. IV), and
one for messages may describe them by a period; each row of the backup carries its time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

from relaysim.relay.compliance import Disclosure, LegalProcess
from relaysim.relay.profiles import dated_sources

__all__ = ["BACKUPS", "Backup", "disclose_backup"]


@dataclass(frozen=True)
class Backup:
    key: str
    custodian: str | None  # who holds the backup; None: there is none
    custodian_holds_key: bool
    description: str
    # The setting did not exist before this day (the first of the month the record names): a run set
    # earlier (``[scenario] start``) cannot have it. None: no such limit in the record.
    since: date | None = None
    since_source: str = ""
    # What the description rests on, listed at the end of a disclosure under a warrant on the custodian, as a
    # profile's are under an order on the relay, dated as of the day it is served (relay.profiles.dated_sources).
    sources: tuple[str, ...] = ()


# The record (docs/record.md): iCloud Backup holds the Messages key unless Advanced Data Protection is on; WhatsApp's
# backups are readable by their custodian unless the user turned on end-to-end encrypted backups.
_FBI_CHART_BACKUPS = (
    "FBI, 'Lawful Access' chart, 2021-01-07 (FOIA release 2021-11-19; justsecurity.org/79549): a search warrant on "
    "iMessage gets device backups, 'with iCloud Backup the keys come too'"
)
_ADP = (
    "Apple, Advanced Data Protection for iCloud, from December 2022: iCloud Backup holds the Messages key unless it "
    "is on; withdrawn for new UK users in February 2025, after a UK technical capability notice"
)
_WHATSAPP_E2E_BACKUPS = (
    "WhatsApp: backups to iCloud or Google Drive are readable by that custodian unless the user turns on "
    "end-to-end encrypted backups, from October 2021"
)


BACKUPS: Final[Mapping[str, Backup]] = {
    b.key: b
    for b in (
        Backup(
            "icloud",
            "Apple (iCloud Backup)",
            True,
            "iCloud Backup without Advanced Data Protection: Apple holds the backup's keys, and with them the "
            "Messages key",
            sources=(_ADP, _FBI_CHART_BACKUPS),
        ),
        Backup(
            "icloud-adp",
            "Apple (iCloud Backup)",
            False,
            "iCloud Backup with Advanced Data Protection on: the keys are only on the user's devices",
            date(2022, 12, 1),
            "Apple's Advanced Data Protection dates from December 2022",
            (_ADP,),
        ),
        Backup(
            "gdrive",
            "Google (Google Drive)",
            True,
            "a WhatsApp backup on Google Drive without end-to-end encrypted backups: readable by Google",
            sources=(_WHATSAPP_E2E_BACKUPS,),
        ),
        Backup(
            "gdrive-e2e",
            "Google (Google Drive)",
            False,
            "a WhatsApp backup on Google Drive with end-to-end encrypted backups on: its key is the user's",
            date(2021, 10, 1),
            "WhatsApp's end-to-end encrypted backups date from October 2021",
            (_WHATSAPP_E2E_BACKUPS,),
        ),
        Backup("none", None, False, "no cloud backup: the history is only on the phones"),
    )
}


def disclose_backup(
    process: LegalProcess,
    profile: str,
    setting: str,
    history: Iterable[Mapping[str, Any]],
    *,
    account: bool = True,
    day: date | None = None,
) -> Disclosure:
    """A search warrant on the custodian of ``process.target``'s backup (``setting``, a key of
    :data:`BACKUPS`): the messages the phone held at service (``history``: rows with ``from``,
    ``to``, ``time``, ``text``) within the warrant's window, if the custodian holds the key, else why not.
    ``account`` False: the target (a phone number) has no account, so no phone of it backed anything up.
    ``day``: the day it is served, in a run set on a date (None: an undated run, today), as of which the backup's
    sources are listed."""
    backup = BACKUPS[setting]
    d = Disclosure(
        process,
        profile,
        served_on=backup.custodian or "no custodian: there is no cloud backup",
        sources=dated_sources(backup.sources, day),
    )
    if not account:
        # An answer, not an error, as the relay's own desk gives it (relay.compliance).
        d.no_such_account = True
        d.notes.append(
            f"No such account: no account is registered to {process.target}, so no phone of it backed up "
            "any message history; there is nothing to produce for it."
        )
        return d
    d.notes.append(f"Backup: {backup.description}.")
    if backup.custodian is None:
        d.refuse("content", "not_retained", backup.description)
    elif not backup.custodian_holds_key:
        d.refuse(
            "content",
            "cryptographically_impossible",
            f"{backup.custodian} holds the backup but not its key: {backup.description}",
        )
    else:
        start, end = process.window()  # from 'from' (or the beginning) to service or 'to', whichever is first
        d.provided["content"] = [dict(row) for row in history if start <= row["time"] <= end]
    return d
