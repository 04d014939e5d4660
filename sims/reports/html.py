"""The report a teacher can project: ``relaysim report DIR`` writes ``DIR/report.html``.

One self-contained file: its styles and its one small script are inline, it loads nothing (its
Content-Security-Policy forbids every fetch), so it opens from a USB stick in a lecture hall with
no network. It reads only a finished run's files:

- ``transcript.jsonl``: the timeline, each message as the phones saw it (sender, recipient, words)
  beside the same moment as the relay saw it (addresses, sizes, envelope ids; under sealed sender
  an empty sender), filterable by person;
- ``disclosures/NAME.json``: each legal order — what was asked, what was given, and each category
  not given with its reason (``relay.legal.REASONS``) and the provider's response;
- ``analysis/*.json`` (``relaysim analyze DIR``; run here in memory, without writing, when absent)
  and the transcript: the true contact graph beside the one an analyst rebuilt from the relay's
  store, as inline SVG on a circular layout (deterministic);
- ``comparison.json`` (a scenario with ``compare_profiles``) and ``matrix.json`` (the FBI chart);
- ``exceptional/*.json``: key escrow, ghost devices, seized phones.

One colour per reason throughout, each always with its words and a short code beside it (for
colour-blind viewers and washed-out projectors). Every string from a run (scenario text, names,
message words) is escaped. The same run gives byte-identical HTML: nothing here reads the clock.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from relaysim.relay.legal import CATEGORIES, REASON_LABELS, REASONS, RESPONSES
from relaysim.relay.profiles import get_profile
from relaysim.sims.analysis.runfiles import (
    brief,
    broken_link,
    finite_number,
    loads,
    not_json,
    own_file,
    plain_name_problem,
    read_run_text,
    run_subfolder_problem,
    shell_word,
    write_whole,
)
from relaysim.sims.term import OUTCOME_COLOURS

__all__ = ["REPORT_FILE", "ReportError", "render_report", "write_report"]

REPORT_FILE = "report.html"
TIMELINE_LIMIT = 600  # rows; a city-sized run says how many more are in transcript.jsonl
LEAD_CHARS = 400  # a longer scenario description shows its first sentence; the rest folds away
GRAPH_NODE_LIMIT = 60  # beyond this a drawing is a hairball: the lists and the counts stay

# One style per outcome of a category asked for: (code, words, colour, tint). Okabe–Ito colours,
# distinguishable with the common colour-vision deficiencies; the code and words carry the meaning too.
# The colours are sims/term.py's OUTCOME_COLOURS, which the terminal's chart uses too.
OUTCOMES: dict[str, tuple[str, str, str, str]] = {
    "provided": ("✓", "handed over", OUTCOME_COLOURS["provided"], "#FDE4D4"),
    "withheld_by_policy": (
        "WP",
        REASON_LABELS["withheld_by_policy"],
        OUTCOME_COLOURS["withheld_by_policy"],
        "#FBEFC6",
    ),
    "not_retained": ("NR", REASON_LABELS["not_retained"], OUTCOME_COLOURS["not_retained"], "#D7E9F6"),
    "no_capability": ("NC", REASON_LABELS["no_capability"], OUTCOME_COLOURS["no_capability"], "#F5DCEB"),
    "cryptographically_impossible": (
        "CI",
        REASON_LABELS["cryptographically_impossible"],
        OUTCOME_COLOURS["cryptographically_impossible"],
        "#D0EFE4",
    ),
}
GIVEN_MEANING = "the provider produced it"


class ReportError(Exception):
    """A folder the report cannot be made from; the message says which file and what to do."""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _id(name: str) -> str:
    """``name`` (a profile's, read from summary.json) as it can stand in an element's id, an href's
    fragment and a data- attribute: a profile's name as it is, any other character written as
    ``_<hex>_``, so a hand-edited summary.json cannot close the attribute or add one."""
    return re.sub(r"[^A-Za-z0-9_.-]", lambda m: f"_{ord(m[0]):x}_", name)


def _clock(t: float, days: bool) -> str:
    s = int(t)
    day = s // 86400
    hms = f"{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"day {day + 1} {hms}" if days or day else hms


def _load(path: Path, run: Path | None = None, again: str | None = None, writer: str = "the run") -> Any:
    """``path``, a JSON file of the run in ``run`` (by default the folder ``path`` is in); ReportError
    naming it otherwise, in the words every reader of a run's JSON gives (runfiles.not_json), saying
    how to write it again (``again``: relaysim analyze for its pages, ``writer``; by default the
    command that makes the run, sims.report.run_again)."""
    try:
        return loads(read_run_text(path))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        if again is None:
            from relaysim.sims.report import run_again

            again = run_again(path.parent if run is None else run)
        said = (
            not_json(path, exc, writer)
            if isinstance(exc, ValueError)
            else f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc})"
        )
        raise ReportError(f"{said}; {again}") from None


def _again(run: Path) -> str:
    """What an error about a file of the run in ``run`` ends with: the command that makes the run
    again (sims.report.run_again), made as the error is raised. ("run the scenario again with
    --force" named neither the scenario nor the folder.)"""
    from relaysim.sims.report import run_again

    return f"; {run_again(run)}"


# --- the page ---------------------------------------------------------------------------------------

CSS = """
:root{--ink:#111;--muted:#444;--line:#999;--bg:#fff;--panel:#f3f3f3;--phone:#eef6ff;--relay:#fff7ea}
*{box-sizing:border-box}
html{font-size:20px}
body{margin:0;font-family:"DejaVu Sans",Verdana,Arial,sans-serif;color:var(--ink);background:var(--bg);line-height:1.4}
header,main,nav{max-width:1500px;margin:0 auto;padding:0 1.2rem}
header{padding-top:1rem}
h1{font-size:2.2rem;margin:.4rem 0}
h2{font-size:1.7rem;margin:2.2rem 0 .6rem;border-bottom:4px solid var(--ink);padding-bottom:.2rem}
h3{font-size:1.3rem;margin:1.4rem 0 .4rem}
p.lead{font-size:1.1rem;max-width:60rem}
nav ul{display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;padding:0;list-style:none;font-size:1.05rem}
a{color:#0047AB}
.muted{color:var(--muted)}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid var(--line);padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:var(--panel)}
.scroll{overflow:auto;max-width:100%}
.legend{display:flex;flex-wrap:wrap;gap:.5rem;margin:.6rem 0;padding:0;list-style:none}
.chip{display:inline-block;white-space:nowrap;border:3px solid;border-radius:.3rem;padding:.05rem .4rem;margin:.1rem .15rem;font-size:.95rem;color:#111}
.chip b{font-weight:800;margin-right:.3rem}
.resp{display:inline-block;border:3px double #111;padding:0 .4rem;font-weight:700;text-transform:uppercase;letter-spacing:.05em}
.resp-refused,.resp-challenged,.resp-withdrawn{background:#111;color:#fff}
.why{color:var(--muted);font-size:.9rem}
select.filter{font-size:1.1rem;padding:.2rem .4rem;margin:.3rem 0 .6rem}
.timeline{max-height:70vh;overflow-y:auto;border:2px solid var(--ink)}
.timeline table{border:0}
.timeline thead th{position:sticky;top:0;z-index:1;font-size:1.05rem}
.timeline td.t{white-space:nowrap;font-variant-numeric:tabular-nums}
td.phone{background:var(--phone);width:42%}
td.relay{background:var(--relay);font-family:"DejaVu Sans Mono",Menlo,monospace;font-size:.9rem}
th.phone{background:#cfe4ff}
th.relay{background:#ffe3b3}
.words{font-size:1.1rem;font-weight:600}
.rec{display:flex;flex-wrap:wrap;gap:.1rem .9rem}
.rec+.rec{border-top:1px dashed var(--line);margin-top:.2rem;padding-top:.2rem}
.f{white-space:nowrap}
.f i{font-style:normal;color:var(--muted);margin-right:.25rem}
.sender-value{display:inline-block;min-width:5.5rem;min-height:1.1em;vertical-align:middle}
.sender-value:empty{border:2px dashed #C2410C;background:repeating-linear-gradient(45deg,#fff,#fff 4px,#f4a582 4px,#f4a582 8px)}
tr.note td{background:#f0f0f0;font-weight:600}
tr.note.exceptional td{background:#f5dceb}
tr[hidden]{display:none}
.graphs{display:grid;grid-template-columns:repeat(auto-fit,minmax(20rem,1fr));gap:1rem}
figure{margin:0;border:2px solid var(--ink);padding:.5rem}
figcaption{font-weight:700;font-size:1.1rem}
svg{width:100%;height:auto;display:block}
.edges li{margin:.15rem 0}
.matrix td{min-width:6rem}
.scroll.tall{max-height:80vh;overflow:auto;border:2px solid var(--ink)}
.tall table{border:0}
.tall thead th{position:sticky;top:0;z-index:2;font-size:1.05rem}
.matrix tbody th{position:sticky;left:0;z-index:1}
.matrix thead th:first-child{left:0;z-index:3}
details.story{max-width:60rem;margin:.2rem 0 .8rem}
details.story summary{cursor:pointer;color:#0047AB;font-size:1.05rem}
.matrix .chip{white-space:normal;font-size:.85rem}
.compare .chip{white-space:normal}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:.1rem 1rem}
dl.kv dt{font-weight:700}
dl.kv dd{margin:0;overflow-wrap:anywhere}
tr.opened td{background:#FDE4D4}
.yes{font-weight:800}
@media (max-width:700px){
  html{font-size:16px}
  h1{font-size:1.6rem}
  h2{font-size:1.35rem}
  .timeline table,.timeline tbody,.timeline tr,.timeline td{display:block;width:100%}
  .timeline thead{display:none}
  .timeline tr{border-bottom:3px solid var(--ink)}
  .timeline td{border:0}
  td.phone::before{content:"phones: ";font-weight:700}
  td.relay::before{content:"relay: ";font-weight:700;font-family:"DejaVu Sans",sans-serif}
  .sources th,.sources td{padding:.2rem .25rem;font-size:.8rem}
}
@media print{.timeline{max-height:none;overflow:visible}}
"""

SCRIPT = """
(function(){
  var sels=document.querySelectorAll('select.filter');
  Array.prototype.forEach.call(sels,function(sel){
    sel.addEventListener('change',function(){
      var id=sel.getAttribute('data-for'), who=sel.value, shown=0;
      var rows=document.querySelectorAll('#'+id+' tbody tr');
      for(var i=0;i<rows.length;i++){
        var people=(rows[i].getAttribute('data-people')||'').split(' ');
        var show=(who===''||people.indexOf(who)>=0);
        rows[i].hidden=!show; if(show){shown++;}
      }
      document.getElementById(sel.getAttribute('data-shown')).textContent=shown;
    });
  });
})();
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def _chip(outcome: str, category: str, *, short: bool = False) -> str:
    code, words, colour, tint = OUTCOMES[outcome]
    cat = CATEGORIES.get(category)
    name = (cat.short if short else cat.label) if cat else category.replace("_", " ")
    return (
        f'<span class="chip o-{outcome}" data-outcome="{outcome}" style="border-color:{colour};'
        f'background:{tint}" title="{_e(words)}"><b>{_e(code)}</b>{_e(name)}</span>'
    )


def _legend(prefix: str = "") -> str:
    items = []
    for key, (code, words, colour, tint) in OUTCOMES.items():
        meaning = GIVEN_MEANING if key == "provided" else REASONS[key]  # type: ignore[index]
        items.append(
            f'<li><span class="chip" style="border-color:{colour};background:{tint}"><b>{_e(code)}</b>'
            f"{_e(words)}</span> <span class='why'>{_e(meaning)}</span></li>"
        )
    return f'<ul class="legend" id="{prefix}legend" style="flex-direction:column">' + "".join(items) + "</ul>"


def _response(resp: str | None) -> str:
    resp = resp or "complied"
    return (
        f'<span class="resp resp-{_e(resp)}" title="{_e(RESPONSES.get(resp, ""))}">'  # type: ignore[call-overload]
        f"{_e('demand withdrawn' if resp == 'withdrawn' else resp)}</span>"
    )


def _page(title: str, lead: str, sections: list[tuple[str, str, str]]) -> str:
    nav = "".join(f'<li><a href="#{_e(sid)}">{_e(name)}</a></li>' for sid, name, _ in sections)
    body = "\n".join(
        f'<section id="{_e(sid)}"><h2>{_e(name)}</h2>\n{content}\n</section>'
        for sid, name, content in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)} — relaysim report</title>\n<style>{CSS}</style></head>\n<body>\n"
        f"<header><h1>{_e(title)}</h1>{lead}</header>\n"
        f'<nav aria-label="sections"><ul>{nav}</ul></nav>\n<main>\n{body}\n</main>\n'
        f"<script>{SCRIPT}</script>\n</body></html>\n"
    )


# --- the timeline -----------------------------------------------------------------------------------


def _acct(device: str | None) -> str:
    return (device or "").split("/")[0]


def _field(label: str, value: object, cls: str = "") -> str:
    return f'<span class="f {cls}"><i>{_e(label)}</i>{_e(value)}</span>'


def _relay_record(r: dict[str, Any]) -> str:
    sealed = r.get("kind") == "sealed_send" or ("account" not in r and r.get("kind") != "delivery")
    parts = [_field("", "sealed send" if sealed else str(r.get("kind", "?")).replace("_", " "))]
    if r.get("kind") == "delivery":
        parts.append(_field("to", f"{r.get('account', '?')}/{r.get('device', '?')}"))
    else:
        sender = "" if sealed else f"{r.get('account', '?')}/{r.get('device', '?')}"
        parts.append(
            '<span class="f sender"><i>from</i><span class="sender-value" data-sealed="'
            + ("1" if sealed else "0")
            + (
                '" title="sealed sender: the relay never saw who sent it" aria-label="no sender (sealed)">'
                if sealed
                else '">'
            )
            + f"{_e(sender)}</span></span>"
        )
        parts.append(_field("to", f"{r.get('recipient_account', '?')}/{r.get('recipient_device', '?')}"))
    parts.append(_field("addr", f"{r.get('host', '?')}:{r.get('port', '?')}"))
    parts.append(_field("bytes", r.get("size", "?")))
    parts.append(_field("id", str(r.get("envelope_id", "?"))[:8] + "…"))
    return '<div class="rec">' + "".join(parts) + "</div>"


def _timeline_rows(events: list[dict[str, Any]], days: bool) -> tuple[list[str], list[str], int]:
    from relaysim.sims.report import event_time, mailbox_holders, unread_words

    boxes = mailbox_holders(events)  # the envelopes a mailbox could not read are its holder's
    sent: dict[Any, dict[str, Any]] = {}
    rows: list[str] = []
    people: set[str] = set()
    total = 0
    for e in events:
        kind = e.get("kind")
        if kind == "message_sent":
            sent[e.get("message")] = e
            people.update({_acct(e.get("from")), str(e.get("to", ""))})
            continue
        who: set[str] = set()
        phone = relay = note = ""
        if kind == "message_accepted":
            s = sent.get(e.get("message"), {})
            frm, to = _acct(s.get("from")), str(s.get("to", "?"))
            who = {frm, to}
            phone = (
                f'<div><b>{_e(frm)}</b> → <b>{_e(to)}</b> <span class="muted">sends</span></div>'
                f'<div class="words">“{_e(e.get("plaintext", ""))}”</div>'
            )
            recs = e.get("relay") or []
            relay = "".join(_relay_record(r) for r in recs[:4])
            if len(recs) > 4:
                relay += f'<div class="rec">… {len(recs) - 4} more envelopes</div>'
        elif kind == "message_received":
            dev = str(e.get("device", "?"))
            s = sent.get(e.get("message"), {})
            who = {_acct(dev), _acct(s.get("from"))}
            phone = (
                f'<div><b>{_e(dev)}</b> <span class="muted">reads</span></div>'
                f'<div class="words">“{_e(e.get("plaintext", ""))}”</div>'
            )
            d = (e.get("relay") or {}).get("delivery")
            relay = (
                _relay_record(d) if d else '<div class="rec">(delivered on a connection already open)</div>'
            )
        elif kind == "message_lost":
            s = sent.get(e.get("message"), {})
            who = {_acct(s.get("from")), str(s.get("to", ""))}
            phone = f"message {_e(e.get('message'))} lost: {_e(e.get('why', ''))}"
        elif kind in ("undecryptable", "duplicate_dropped"):
            # an envelope a phone (or a mailbox on it) could not read, in relaysim show's words
            dev = str(e.get("device", "?"))
            holder = boxes.get(dev.rpartition("/")[0], (dev, ""))[0]
            who = {_acct(holder), _acct(sent.get(e.get("message"), {}).get("from"))}
            phone = f"<div>{_e(unread_words(e, boxes))}</div>"
        elif kind in ("device_online", "device_offline"):
            dev = str(e.get("device", "?"))
            who = {_acct(dev)}
            phone = relay = f"{_e(dev)} {'comes online' if kind == 'device_online' else 'goes offline'}"
        elif kind == "legal_process_served":
            who = {str(e["target"])} if e.get("target") else set()
            note = (
                f"legal order served: {_e(str(e.get('process', '?')).replace('_', ' '))} on "
                f"{_e(e.get('target') or 'everyone')} ({_e(e.get('name', ''))})"
            )
        elif kind == "disclosure":
            who = {str(e["target"])} if e.get("target") else set()
            given = ", ".join(str(c).replace("_", " ") for c in e.get("provided") or []) or "nothing"
            note = f"the provider answers {_e(e.get('name', ''))} ({_e(e.get('response', 'complied'))}): handed over {_e(given)}"
        elif kind in ("exceptional_access", "escrow_key_stolen", "ghost_read", "phone_seized"):
            note = _exceptional_note(e)
            who = {_acct(str(e[k])) for k in ("device", "target") if e.get(k)}
        else:
            continue
        total += 1
        if len(rows) >= TIMELINE_LIMIT:
            continue
        t = _e(_clock(event_time(e.get("t", 0)), days))
        data = _e(" ".join(sorted(p for p in who if p)))
        if note:
            cls = "note exceptional" if kind not in ("legal_process_served", "disclosure") else "note"
            rows.append(
                f'<tr class="{cls}" data-people="{data}"><td class="t">{t}</td><td colspan="2">{note}</td></tr>'
            )
        else:
            rows.append(
                f'<tr data-kind="{_e(kind)}" data-people="{data}"><td class="t">{t}</td>'
                f'<td class="phone">{phone}</td><td class="relay">{relay}</td></tr>'
            )
    return rows, sorted(p for p in people if p), total


def _exceptional_note(e: dict[str, Any]) -> str:
    kind = e["kind"]
    if kind == "ghost_read":
        return (
            f"exceptional access: the ghost device {_e(e.get('device', '?'))} reads message "
            f"{_e(e.get('message', '?'))}: “{_e(e.get('plaintext', ''))}”"
        )
    if kind == "escrow_key_stolen":
        return f"exceptional access: the escrow key is stolen — {_e(e.get('what_it_means', ''))}"
    if kind == "phone_seized":
        return f"exceptional access: {_e(e.get('device', '?'))} is seized — {_e(e.get('what_it_means', ''))}"
    demand = str(e.get("demand", "?")).replace("_", " ")
    detail = e.get("what_changes") or e.get("registered_by") or ""
    return f"exceptional access: {_e(demand)} begins — {_e(detail)}"


_TIMELINE_ERRORS = (KeyError, TypeError, IndexError, AttributeError, ValueError)  # an event it cannot read


def _timeline(events: list[dict[str, Any]], days: bool, source: str, prefix: str = "") -> str:
    rows, people, total = _timeline_rows(events, days)
    options = "".join(f'<option value="{_e(p)}">{_e(p)}</option>' for p in people)
    more = (
        f'<p class="muted">Showing the first {len(rows)} of {total} moments; all of them are in {_e(source)}.</p>'
        if total > len(rows)
        else ""
    )
    return (
        '<p class="lead">Left, what exists only on the phones: who wrote to whom, and the words. Right, the '
        "same moment as the relay recorded it: addresses, sizes, envelope ids — never words. Under sealed "
        "sender the relay's <b>from</b> is empty (the hatched box): it routed the envelope without learning "
        "who sent it.</p>"
        f'<label for="{prefix}filter">Show one person: </label><select class="filter" id="{prefix}filter" '
        f'data-for="{prefix}timeline-table" data-shown="{prefix}timeline-shown"><option value="">everyone</option>'
        f'{options}</select> <span class="muted">(<span id="{prefix}timeline-shown">{len(rows)}</span> rows)</span>'
        f'<div class="timeline scroll"><table class="timeline-table" id="{prefix}timeline-table"><thead><tr><th>time</th>'
        '<th class="phone">what the phones saw</th><th class="relay">what the relay saw</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>{more}"
    )


# --- legal orders -------------------------------------------------------------------------------------


def _order(
    d: dict[str, Any], days: bool, calendar: tuple[float, bool], on_run_clock: Callable[[float], float]
) -> str:
    process = str(d.get("process", "?"))
    served = d.get("served")
    head = (
        f"<h3>{_e(d.get('name', '?'))}: {_e(process.replace('_', ' '))} on {_e(d.get('target') or 'everyone')} "
        f"{_response(d.get('response'))}</h3>"
    )
    desc = d.get("process_description") or ""
    meta = f"<p>{_e(desc)}</p>" if desc else ""
    if served is not None and not finite_number(served):
        raise ValueError(f"served: expected a time in seconds, got {json.dumps(served)[:40]}")
    if served is not None:
        from relaysim.sims.report import sim_clock

        epoch, dated = calendar
        at = on_run_clock(float(served))  # (a live run's relay kept the wall clock: sims.report.relay_clock)
        when = sim_clock(at, epoch, True) if dated else _clock(at - epoch, days)
        meta += f'<p class="muted">Served at {_e(when)} on the {_e(d.get("profile", "?"))} relay.</p>'
    provided = d.get("provided") or {}
    rows = []
    for cat, items in provided.items():
        n = len(items) if isinstance(items, list) else 1
        rows.append(f"<tr><td>{_chip('provided', cat)}</td><td>{n} record{'s' if n != 1 else ''}</td></tr>")
    for reason in OUTCOMES:
        if reason == "provided":
            continue
        for cat, why in ((d.get("not_provided") or {}).get(reason) or {}).items():
            rows.append(f"<tr><td>{_chip(reason, cat)}</td><td>{_e(why)}</td></tr>")
    table = (
        "<div class='scroll'><table><thead><tr><th>asked for</th><th>what the provider did</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        if rows
        else "<p>Nothing asked for.</p>"
    )
    content = [r for r in provided.get("content") or [] if "text" in r]  # receipts carry no words
    words = ""
    if content:
        items = "".join(
            f"<li>{_e(r.get('from') or '?')} → {_e(r.get('to', '?'))}: “{_e(r.get('text', ''))}”</li>"
            for r in content[:5]
        )
        more = f"<li>… and {len(content) - 5} more</li>" if len(content) > 5 else ""
        words = f"<p><b>The words the provider handed over:</b></p><ul>{items}{more}</ul>"
    notes = "".join(f"<li>{_e(n)}</li>" for n in d.get("notes") or [])
    return f'<article class="order">{head}{meta}{table}{words}{"<ul>" + notes + "</ul>" if notes else ""}</article>'


def _subfolder(run: Path, name: str) -> Path:
    """``run/name``, a folder of the run's (runfiles.run_subfolder_problem): a ReportError if something
    else stands there (a file was passed over: "No legal order was served in this run")."""
    problem = run_subfolder_problem(run, name)
    if problem is not None:
        raise ReportError(problem)
    return run / name


def _orders(run: Path, days: bool) -> str:
    from relaysim.sims.report import run_calendar, run_relay_clock

    try:  # (read whether or not an order was served: a broken provider.json is said, not passed over)
        calendar = run_calendar(run)  # the scenario's start, or SIM_EPOCH
        on_run_clock = run_relay_clock(run)  # (a live run's relay kept the wall clock)
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    files = sorted(_subfolder(run, "disclosures").glob("*.json"))
    if not files:
        return "<p>No legal order was served in this run.</p>"
    orders = [(f, _load(f, run)) for f in files]
    from relaysim.sims.report import disclosure_problem

    for f, d in orders:
        problem = disclosure_problem(d)
        if problem is not None:
            raise ReportError(f"{f}: {problem}{_again(run)}")
    orders.sort(key=lambda fd: (fd[1].get("served") if finite_number(fd[1].get("served")) else 0, fd[0].name))
    parts = []
    for f, d in orders:
        try:
            parts.append(_order(d, days, calendar, on_run_clock))
        except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
            raise ReportError(
                f"{f} is not a disclosure as relaysim writes it ({exc!r}){_again(run)}"
            ) from None
    return "".join(parts)


# --- the contact graph --------------------------------------------------------------------------------


def _true_pairs(run: Path) -> set[tuple[str, str]]:
    from relaysim.sims.analysis_scoring import read_truth

    # (who wrote to whom, no times: the relay's clock, provider.json's, is the orders' to read and check)
    truth = read_truth(run / "transcript.jsonl", to_run=lambda t: t)
    return {tuple(sorted(p)) for p in truth.pairs() if len(p) == 2}  # type: ignore[misc]


def _analyses(run: Path) -> dict[str, dict[str, Any]]:
    """``analysis/NAME.json`` as written by ``relaysim analyze``; computed in memory when absent."""
    folder = _subfolder(run, "analysis")  # (a file there: computed in memory, saying nothing)
    if folder.is_dir() and any(folder.glob("*.json")):
        # (analyze writes them: a page that cannot be read is written again by it, not by a new run)
        again = f"write it again with: relaysim analyze {shell_word(run)}"
        pages = {f.stem: _load(f, run, again, "relaysim analyze") for f in sorted(folder.glob("*.json"))}
        for stem, page in pages.items():  # (a list: "holds a page … (AttributeError(…))", no file named)
            if not isinstance(page, dict):
                raise ReportError(
                    f"{folder / (stem + '.json')}: expected an analysis page (a JSON object), got "
                    f"{type(page).__name__}; {again}"
                )
            problem = _page_problem(page)
            if problem is not None:  # ({"x": 1} was drawn as a contact graph of no edges, saying nothing)
                raise ReportError(f"{folder / (stem + '.json')}: {problem}; {again}")
        _directory_since(run, folder, pages)
        return pages
    from relaysim.sims.analysis.view import AnalysisInputError
    from relaysim.sims.analysis_scoring import as_written, compute_analyses

    # (relaysim analyze's own path: the run's directory.json read, and its transcript, as it reads them;
    # what it cannot read is a ReportError, as every other file of the run report reads: a malformed
    # disclosure raised AnalysisInputError, without the advice, from write_report)
    try:
        computed = compute_analyses(run)
    except AnalysisInputError as exc:
        raise ReportError(f"{exc}{_again(run)}") from None
    return {name: as_written(data) for name, (_a, data) in computed.items()}


def _page_problem(page: dict[str, Any]) -> str | None:
    """What keeps ``page``, an ``analysis/NAME.json`` read back, from being one as relaysim analyze
    writes it (sims.analysis_scoring.compute_analyses), in the fields the report reads of it (the
    contact graph and its score), as ``field: expected …, got …``; None if nothing does."""

    def got(data: dict[str, Any], key: str) -> str:
        return brief(data[key]) if key in data else "nothing (the field is missing)"

    analysis = page.get("analysis")
    if not isinstance(analysis, dict):
        return f"analysis: expected the analysis (an object), got {got(page, 'analysis')}"
    graph = analysis.get("contact_graph")
    if not isinstance(graph, dict):
        return f"analysis.contact_graph: expected the contact graph (an object), got {got(analysis, 'contact_graph')}"
    edges = graph.get("edge_list")
    if not isinstance(edges, list):
        return f"analysis.contact_graph.edge_list: expected a list of edges, got {got(graph, 'edge_list')}"
    for i, e in enumerate(edges):
        between = e.get("between") if isinstance(e, dict) else None
        if not (isinstance(between, list) and len(between) == 2 and all(isinstance(a, str) for a in between)):
            odd = f"between: {got(e, 'between')}" if isinstance(e, dict) else brief(e)
            return (
                f"analysis.contact_graph.edge_list[{i}]: expected an edge (an object whose 'between' is "
                f"its two accounts' names), got {odd}"
            )
    score = page.get("score")  # (none without the run's transcript to score against)
    if score is None:
        return None
    if not isinstance(score, dict):
        return f"score: expected the scores (an object) or null, got {brief(score)}"
    graded = score.get("contact_graph")
    if not isinstance(graded, dict):
        return f"score.contact_graph: expected the contact graph's score (an object), got {got(score, 'contact_graph')}"
    for key in ("true_pairs", "inferred_pairs", "correct"):
        v = graded.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            return f"score.contact_graph.{key}: expected a count, got {got(graded, key)}"
    for key in ("precision", "recall"):  # (null where there is nothing to divide by)
        v = graded.get(key)
        if v is not None and not (finite_number(v) and 0 <= v <= 1):
            return f"score.contact_graph.{key}: expected a fraction from 0 to 1 or null, got {brief(v)}"
    return None


def _directory_since(run: Path, folder: Path, pages: dict[str, Any]) -> None:
    """A warning (sims.report.RunFolderWarning) if the run's directory.json is not the one analyze
    read when it wrote ``pages`` (its analysis/ pages): each page's trait inferences record the
    directory they were made with (sensitive_traits.directory; a page of an older relaysim, how many
    accounts it listed; a page without them, none). report read the pages and not the file, which
    may have been edited since, saying nothing; it does not re-analyse (the report shows no trait
    inference), it says which file changed and how to write the pages again."""
    import warnings

    from relaysim.sims.analysis.run import run_directory
    from relaysim.sims.report import RunFolderWarning

    now = run_directory(run) or {}
    for name, page in pages.items():
        analysis = page.get("analysis") if isinstance(page, dict) else None
        traits = analysis.get("sensitive_traits") if isinstance(analysis, dict) else None
        counted = traits.get("directory_accounts") if isinstance(traits, dict) else None
        if traits is None:
            then: dict[str, Any] | None = {}
        elif isinstance(traits, dict) and isinstance(traits.get("directory"), dict):
            then = traits["directory"]
        elif counted not in (None, len(now)):
            then = None  # (an older page: its count alone)
        else:
            continue  # (nothing recorded to tell by)
        if then == now:
            continue
        if then is None:
            how = f"it lists {len(now)} accounts, the page was made with {counted}"
        else:
            changed = sorted(a for a in {*then, *now} if then.get(a) != now.get(a))
            first = changed[0]
            how = (
                f"{len(changed)} account{'s' if len(changed) != 1 else ''} listed otherwise, e.g. {brief(first, 's')}: "
                f"{brief(now[first]) if first in now else 'not listed'} now, "
                f"{brief(then[first]) if first in then else 'not listed'} then"
            )
        warnings.warn(
            f"{run / 'directory.json'}: changed since relaysim analyze wrote {folder / (name + '.json')} ({how}): "
            "the trait inferences in analysis/ are of the directory as it was; write them again with: "
            f"relaysim analyze {shell_word(run)}",
            RunFolderWarning,
            stacklevel=2,
        )
        return


def relay_stores_read(run: Path) -> list[Path]:
    """The relay.db files :func:`render_report` reads in the folder ``run``: the store of each run
    whose page it computes (:func:`_analyses`: a run without analyze's pages; the run itself, or a
    comparison's profiles' runs), none for the FBI chart (its matrix alone). What it reads is
    checked by ``relaysim report`` before it reads (cli._newer_store); any other relay.db there is
    warned of, not refused."""
    run = Path(run)
    if (run / "matrix.json").is_file():
        return []
    runs = [run]
    if (run / "comparison.json").is_file():
        try:
            profiles = loads(read_run_text(run / "summary.json")).get("compare_profiles") or []
        except (OSError, ValueError, AttributeError):  # (render_report names what is wrong there)
            profiles = []
        runs = (  # (a name that is not one folder's, ../x or /etc, led outside the run: render_report refuses it)
            [run / p for p in profiles if plain_name_problem(p, "") is None]
            if isinstance(profiles, list)
            else []
        )
    return [
        r / "relay.db"
        for r in runs
        if not ((r / "analysis").is_dir() and any((r / "analysis").glob("*.json")))
    ]


def _svg(nodes: list[str], edges: list[tuple[str, str, str]], label: str) -> str:
    """A circular layout (networkx, nodes in sorted order: deterministic) as inline SVG; ``edges`` as
    (a, b, class)."""
    import networkx as nx

    size, r = 600, 230
    g = nx.Graph()
    g.add_nodes_from(nodes)
    pos = nx.circular_layout(g, scale=r, center=(size / 2, size / 2)) if nodes else {}

    def xy(n: str) -> tuple[float, float]:
        x, y = pos[n]
        return round(float(x), 1), round(float(y), 1)

    style = {
        "true": 'stroke="#111" stroke-width="4"',
        "right": 'stroke="#00785A" stroke-width="5"',
        "wrong": 'stroke="#C2410C" stroke-width="5" stroke-dasharray="14 8"',
        "missed": 'stroke="#777" stroke-width="3" stroke-dasharray="3 7"',
    }
    lines = []
    for a, b, cls in edges:
        (x1, y1), (x2, y2) = xy(a), xy(b)
        lines.append(
            f'<line class="edge {cls}" x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" {style[cls]}><title>'
            f"{_e(a)} — {_e(b)}: {_e(cls)}</title></line>"
        )
    dots = []
    for n in nodes:
        x, y = xy(n)
        angle = math.atan2(y - size / 2, x - size / 2)
        tx, ty = x + 34 * math.cos(angle), y + 34 * math.sin(angle) + 8
        anchor = "middle" if abs(math.cos(angle)) < 0.3 else ("start" if math.cos(angle) > 0 else "end")
        dots.append(
            f'<circle cx="{x}" cy="{y}" r="12" fill="#0047AB" stroke="#fff" stroke-width="3"/>'
            f'<text x="{round(tx, 1)}" y="{round(ty, 1)}" text-anchor="{anchor}" font-size="26" '
            f'font-weight="700" fill="#111">{_e(n)}</text>'
        )
    return (
        f'<svg viewBox="-90 -10 {size + 180} {size + 20}" role="img" aria-label="{_e(label)}" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(lines)}{"".join(dots)}</svg>'
    )


def _graph(run: Path, prefix: str = "") -> str:
    truth = _true_pairs(run)
    analyses = _analyses(run)
    name = "relay" if "relay" in analyses else (sorted(analyses)[0] if analyses else None)
    inferred: set[tuple[str, str]] = set()
    if name is not None:
        edge_list = analyses[name].get("analysis", {}).get("contact_graph", {}).get("edge_list", [])
        for e in edge_list:
            if len(e.get("between", [])) == 2:
                a, b = sorted(map(str, e["between"]))
                inferred.add((a, b))
    right, wrong, missed = sorted(truth & inferred), sorted(inferred - truth), sorted(truth - inferred)
    nodes = sorted({p for pair in truth | inferred for p in pair})
    parts = [
        '<p class="lead">Left, who really wrote to whom (the simulator knows; the provider does not). Right, '
        "the contact graph an analyst rebuilt from "
        + ("the relay's own database" if name == "relay" else _e(name or "nothing"))
        + ": <span style='color:#00785A'>━ solid green</span> edges it got right, "
        "<span style='color:#C2410C'>╍ dashed orange</span> edges it got wrong, "
        "<span style='color:#555'>┈ dotted grey</span> edges it missed.</p>"
    ]
    if len(nodes) > GRAPH_NODE_LIMIT:
        parts.append(
            f"<p>{len(nodes)} people: too many to draw legibly; the counts below say how it did.</p>"
        )
    elif nodes:
        true_svg = _svg(nodes, [(a, b, "true") for a, b in sorted(truth)], "the true contact graph")
        inf_edges = [(a, b, "missed") for a, b in missed] + [(a, b, "right") for a, b in right]
        inf_edges += [(a, b, "wrong") for a, b in wrong]
        inf_svg = _svg(nodes, inf_edges, "the contact graph the analyst rebuilt")
        parts.append(
            f'<div class="graphs"><figure id="{prefix}graph-true"><figcaption>Who really talked ({len(truth)} pairs)'
            f"</figcaption>{true_svg}</figure>"
            f'<figure id="{prefix}graph-inferred"><figcaption>What the analyst rebuilt ({len(inferred)} pairs)</figcaption>'
            f"{inf_svg}</figure></div>"
        )

    def pairs(ps: Iterable[tuple[str, str]]) -> str:
        return ", ".join(f"{_e(a)}–{_e(b)}" for a, b in ps) or "none"

    parts.append(
        f'<ul class="edges"><li><b>Right ({len(right)}):</b> {pairs(right)}</li>'
        f"<li><b>Wrong ({len(wrong)}):</b> {pairs(wrong)}</li><li><b>Missed ({len(missed)}):</b> {pairs(missed)}</li></ul>"
    )
    if analyses:
        rows = []
        for n, data in analyses.items():
            s = (data.get("score") or {}).get("contact_graph") or {}

            def pct(x: Any) -> str:
                return "–" if not isinstance(x, int | float) else f"{x:.0%}"

            rows.append(
                f"<tr><td>{_e(n)}</td><td>{_e(s.get('inferred_pairs', '–'))}</td><td>{_e(s.get('correct', '–'))}</td>"
                f"<td>{_e(s.get('true_pairs', '–'))}</td><td>{pct(s.get('precision'))}</td><td>{pct(s.get('recall'))}</td></tr>"
            )
        parts.append(
            "<h3>Each source the analyst could work from</h3><p class='muted'>“relay” is the provider's whole "
            "database; each other row is one disclosure package, all an investigator receives.</p>"
            "<div class='scroll'><table class='sources'><thead><tr><th>source</th><th>pairs inferred</th><th>right</th>"
            f"<th>true pairs</th><th>precision</th><th>recall</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        )
    return "".join(parts)


# --- comparisons and the matrix ------------------------------------------------------------------------


def _cell(outcome: dict[str, Any], *, short: bool) -> str:
    chips = [_chip("provided", c, short=short) for c in outcome.get("provided") or []]
    for reason in OUTCOMES:
        if reason != "provided":
            chips += [_chip(reason, c, short=short) for c in outcome.get(reason) or []]
    resp = outcome.get("response") or "complied"
    head = "" if resp == "complied" else f"<div>{_response(resp)}</div>"
    return head + ("".join(chips) or "<span class='muted'>nothing asked</span>")


NOT_SERVED = "not served on this operator"


def _outcome_problem(outcome: object) -> str | None:
    """What keeps one outcome read back from comparison.json or matrix.json (a process on one
    operator) from being shown, as ``.key: expected …, got …``; None if nothing does."""
    if not isinstance(outcome, dict):
        return f": expected an object, got {type(outcome).__name__}"
    response = outcome.get("response")
    if response is not None and not isinstance(response, str):
        return f".response: expected a string, got {type(response).__name__}"
    for reason in OUTCOMES:
        categories = outcome.get(reason)
        if categories is not None and not (
            isinstance(categories, list) and all(isinstance(c, str) for c in categories)
        ):
            odd = (
                type(categories).__name__
                if not isinstance(categories, list)
                else "a list holding " + next(type(c).__name__ for c in categories if not isinstance(c, str))
            )
            return f".{reason}: expected a list of categories' names, got {odd}"
    return None


def _comparison_data(path: Path) -> list[dict[str, Any]]:
    """comparison.json as _comparison reads it: a list of orders, each with an outcome per profile;
    ReportError naming the file and the entry otherwise (an edited or foreign file raised
    AttributeError or TypeError, an internal error).

    Its values too, as chart holds matrix.json's (sims.matrix): each order once, by name, of a kind
    of process relaysim knows, on relay profiles it knows; each outcome a response relaysim gives and
    categories that process asks for, each once, every one of them in one outcome; its history
    ending in that response; and each outcome the one in that profile's disclosure of the order
    (sims.matrix.outcome_disagreement), so that a response or a category changed to another valid
    value is not shown as the operator's answer. (Only the types were checked: an unknown response,
    a category of no process, or one in two outcomes were drawn as they were.)"""
    from relaysim.relay.legal import INSTRUMENTS
    from relaysim.relay.profiles import PROFILES
    from relaysim.sims.analysis.runfiles import brief
    from relaysim.sims.matrix import outcome_disagreement, outcome_problem

    data = _load(path)
    if not isinstance(data, list):
        raise ReportError(
            f"{path}: expected a JSON list of orders, got {type(data).__name__}{_again(path.parent)}"
        )
    names: set[str] = set()
    for i, row in enumerate(data):
        profiles = row.get("profiles") if isinstance(row, dict) else None
        if not isinstance(profiles, dict):
            what = f"[{i}].profiles" if isinstance(row, dict) else f"[{i}]"
            got = type(profiles if isinstance(row, dict) else row).__name__
            expected = "an object of outcomes by profile" if isinstance(row, dict) else "an object"
            raise ReportError(f"{path}: {what}: expected {expected}, got {got}{_again(path.parent)}")
        for profile, outcome in profiles.items():
            problem = _outcome_problem(outcome)
            if problem:
                raise ReportError(f"{path}: [{i}].profiles.{profile}{problem}{_again(path.parent)}")
        assert isinstance(row, dict)
        name, process, target = row.get("name"), row.get("process"), row.get("target")
        if not isinstance(name, str) or not name:
            raise ReportError(
                f"{path}: [{i}].name: expected the order's name, got {brief(name)}{_again(path.parent)}"
            )
        problem = plain_name_problem(name, "the order's name, that of its disclosure's file")
        if problem is not None:  # (../../x was read as the disclosure ../../x.json, outside the run)
            raise ReportError(f"{path}: [{i}].name: {problem}{_again(path.parent)}")
        if name in names:
            raise ReportError(
                f"{path}: [{i}].name: {brief(name)} is there twice; each order is once{_again(path.parent)}"
            )
        names.add(name)
        if not isinstance(process, str) or process not in INSTRUMENTS:
            raise ReportError(
                f"{path}: [{i}].process: expected a kind of legal process relaysim knows "
                f"(relay/legal.py), got {brief(process)}{_again(path.parent)}"
            )
        if target is not None and not isinstance(target, str):
            raise ReportError(
                f"{path}: [{i}].target: expected an account or null, got {brief(target)}{_again(path.parent)}"
            )
        if not profiles:
            raise ReportError(
                f"{path}: [{i}].profiles: expected the outcome on each operator, got none{_again(path.parent)}"
            )
        for profile, outcome in profiles.items():
            where = f"{path}: [{i}].profiles.{brief(profile)}"
            if profile not in PROFILES:
                raise ReportError(
                    f"{where}: expected a relay profile's name ({', '.join(PROFILES)}){_again(path.parent)}"
                )
            problem = outcome_problem(outcome, process)
            history = outcome.get("history")
            if problem is None and history is not None:
                if not (isinstance(history, list) and history and all(r in RESPONSES for r in history)):
                    problem = f".history: expected a list of responses ({', '.join(RESPONSES)}), got {brief(history)}"
                elif history[-1] != outcome["response"]:
                    problem = (
                        f".history: ends in {brief(history[-1])}, but the response is "
                        f"{brief(outcome['response'])} (the last of its history)"
                    )
            if problem is None:
                problem = outcome_disagreement(path.parent / profile / "disclosures", outcome, process, name)
            if problem is not None:
                raise ReportError(f"{where}{problem}{_again(path.parent)}")
    return data


def _matrix_data(path: Path) -> dict[str, dict[str, Any]]:
    """matrix.json as _matrix reads it: an outcome per profile and process; ReportError naming the
    file and the entry otherwise."""
    data = _load(path)
    if not isinstance(data, dict):
        raise ReportError(
            f"{path}: expected a JSON object of profiles, got {type(data).__name__}{_again(path.parent)}"
        )
    for profile, row in data.items():
        if not isinstance(row, dict):
            raise ReportError(
                f"{path}: {profile}: expected an object of outcomes by process, got {type(row).__name__}{_again(path.parent)}"
            )
        for process, outcome in row.items():
            problem = _outcome_problem(outcome)
            if problem:
                raise ReportError(f"{path}: {profile}.{process}{problem}{_again(path.parent)}")
    # and the matrix's own shape, as relaysim chart holds it: a category that is none, or taken out of
    # a cell, or under two outcomes, or a provider or process left out, was drawn as the chart
    from relaysim.sims.matrix import matrix_disagreement, matrix_problem

    problem = matrix_problem(data)
    if problem is None:  # and each cell against the disclosure it was read off, as chart holds it
        problem = matrix_disagreement(path.parent, data)
    if problem:
        raise ReportError(f"{path}: {problem}{_again(path.parent)}")
    # and summary.json's copy of it, as chart holds it (it was never read back against it)
    from relaysim.sims.matrix import summary_problem

    summary_file = path.parent / "summary.json"
    problem = summary_problem(_load(summary_file), data)
    if problem:
        raise ReportError(f"{summary_file}: {problem}{_again(path.parent)}")
    return data


def _comparison(out: Path, data: list[dict[str, Any]]) -> str:
    profiles: list[str] = []
    for row in data:
        for p in row.get("profiles", {}):
            if p not in profiles:
                profiles.append(p)
    everywhere = all(p in row.get("profiles", {}) for row in data for p in profiles)
    served = (
        "each order was served on each operator"
        if everywhere
        else "each order was served on each operator, except where a column says it was not (an order the "
        "record shows made on one provider's service only)"
    )
    parts = [
        "<p class='lead'>The same people send the same messages at the same times under each relay profile; "
        f"{served}. Each column is what that operator produced from its own store.</p>"
    ]
    for row in data:
        cells = "".join(
            f"<td>{_cell(row['profiles'][p], short=False)}</td>"
            if p in row["profiles"]
            else f"<td class='muted'>{NOT_SERVED}</td>"
            for p in profiles
        )
        parts.append(
            f"<h3>{_e(row.get('name', '?'))}: {_e(str(row.get('process', '?')).replace('_', ' '))} on "
            f"{_e(row.get('target') or 'everyone')}</h3><div class='scroll'><table class='compare'><thead><tr>"
            + "".join(f"<th>{_e(_profile_title(p))}</th>" for p in profiles)
            + f"</tr></thead><tbody><tr>{cells}</tr></tbody></table></div>"
        )
    return "".join(parts)


def _profile_title(profile: str) -> str:
    """A provider as people know it ("WhatsApp"), from relay/profiles.py; the profile's id otherwise."""
    try:
        return str(get_profile(profile).title)
    except (KeyError, ValueError):
        return profile


def _matrix(data: dict[str, dict[str, Any]]) -> str:
    processes: list[str] = []
    for row in data.values():
        for p in row:
            if p not in processes:
                processes.append(p)
    head = "".join(f"<th>{_e(p.replace('_', ' '))}</th>" for p in processes)
    body = "".join(
        f"<tr><th>{_e(_profile_title(profile))}</th>"
        + "".join(f"<td>{_cell(row[p], short=True)}</td>" if p in row else "<td>–</td>" for p in processes)
        + "</tr>"
        for profile, row in data.items()
    )
    return (
        "<p class='lead'>Every provider (rows) under every kind of legal process (columns): each category the "
        "process asks for, handed over or not, and why not.</p>"
        f"<div class='scroll tall'><table class='matrix' id='matrix-table'><thead><tr><th>provider</th>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


# --- exceptional access ------------------------------------------------------------------------------


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "<span class='yes'>yes</span>" if v else "no"
    if v is None:
        return "–"
    if isinstance(v, float):
        return _e(f"{v:g}")
    if isinstance(v, list):
        if all(not isinstance(x, dict | list) for x in v):
            return _e(", ".join(str(x) for x in v)) or "none"
        return "<br>".join(_value(x) for x in v)
    if isinstance(v, dict):
        return _e("; ".join(f"{k.replace('_', ' ')}: {x}" for k, x in v.items()))
    return _e(v)


OPENED_KEYS = ("opened", "read_by_ghost")


def _exceptional_value(key: str, v: Any) -> str:
    """A value of an exceptional-access report: a ghost report's ``refused`` counts in the words its
    Markdown says them in (sims.access.reports.REFUSED_TEXT), any other as :func:`_value` shows it."""
    if key == "refused" and isinstance(v, dict):
        from relaysim.sims.access.reports import refused_words

        return _e(refused_words(v))
    return _value(v)


def _exceptional(run: Path, prefix: str = "") -> str:
    """The exceptional-access reports of ``run``: an article each, its id ``{prefix}exceptional-NAME``
    (a comparison's profiles may have the same report: each has its profile's prefix, as its section)."""
    files = sorted(_subfolder(run, "exceptional").glob("*.json"))
    parts = [
        "<p class='lead'>What changes when the phones are made to share their keys: a key held in escrow (and "
        "what its theft opens), a ghost device added to an account, a seized phone. Rows the authority could "
        "read are marked <b>opened</b>; their words are shown because someone other than the two people read them.</p>"
    ]
    for f in files:
        data = _load(f, run)
        if not isinstance(data, dict):
            continue
        scalars = {k: v for k, v in data.items() if k != "rows"}
        dl = "".join(
            f"<dt>{_e(k.replace('_', ' '))}</dt><dd>{_exceptional_value(k, v)}</dd>"
            for k, v in scalars.items()
        )
        if not isinstance(data.get("rows") or [], list):
            raise ReportError(f"{f}: rows: expected a list, got {type(data['rows']).__name__}{_again(run)}")
        rows = [r for r in data.get("rows") or [] if isinstance(r, dict)]
        cols: list[str] = []
        for r in rows:
            cols += [k for k in r if k not in cols]
        body = []
        for r in rows:
            opened = any(r.get(k) is True for k in OPENED_KEYS)
            body.append(
                f"<tr class='{'opened' if opened else ''}'>"
                + "".join(f"<td>{_value(r.get(c))}</td>" for c in cols)
                + "</tr>"
            )
        table = (
            "<div class='scroll'><table><thead><tr>"
            + "".join(f"<th>{_e(c.replace('_', ' '))}</th>" for c in cols)
            + f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
            if rows
            else ""
        )
        parts.append(
            f"<article id='{prefix}exceptional-{_id(f.stem)}'><h3>{_e(f.stem)}</h3><dl class='kv'>{dl}</dl>{table}</article>"
        )
    return "".join(parts)


# --- putting it together -------------------------------------------------------------------------------


def _read_events(run: Path) -> list[dict[str, Any]]:
    from relaysim.sims.report import RunFolderError, read_run

    try:
        events, _summary = read_run(run)
    except RunFolderError as exc:
        raise ReportError(str(exc)) from None
    return events


def _whole(summary: dict[str, Any], key: str, where: Path) -> int | None:
    """``summary[key]``, a count or a seed (a whole number from 0), or None if it is not there;
    ReportError naming the file and the field otherwise: the lead showed any value as the run's
    ("Seed many, xxx people on 2 devices")."""
    value = summary.get(key)
    if value is None:
        return None
    if type(value) is not int or value < 0:
        from relaysim.sims.analysis.runfiles import brief

        raise ReportError(
            f"{where}: {key}: expected a whole number from 0, got {brief(value)}{_again(where.parent)}"
        )
    return value


def _lead(summary: dict[str, Any], description: str, where: Path) -> str:
    seed, people, devices = (_whole(summary, key, where) for key in ("seed", "people", "devices"))
    facts = f"Seed {'?' if seed is None else seed}"
    if people is not None:
        facts += f", {people} people on {'?' if devices is None else devices} devices"
    if finite_number(summary.get("duration_s")):
        facts += f", {summary['duration_s'] / 3600:g} simulated hours"
    first, rest = _first_sentence(description)
    story = (
        f"<details class='story'><summary>The whole story and its sources</summary><p>{_e(rest)}</p></details>"
        if rest
        else ""
    )
    from relaysim.sims.report import envelope_lines

    envelopes = "".join(f"<li>{_e(line)}</li>" for line in envelope_lines(summary))
    return (
        (f"<p class='lead'>{_e(first)}</p>" if first else "")
        + story
        + f"<p class='muted'>{_e(facts)}.</p>"
        + (
            f"<p class='muted'>Envelopes, by whose device they were for:</p><ul class='muted'>{envelopes}</ul>"
            if envelopes
            else ""
        )
    )


def _first_sentence(text: str, keep: int = LEAD_CHARS) -> tuple[str, str]:
    """A long description split after its first sentence: on a projector the page opens on one
    sentence and the section list, not on a screenful of prose (the rest is one click away)."""
    if len(text) <= keep:
        return text, ""
    end = text.find(". ", 40)
    if end < 0 or end > keep:
        return text, ""
    return text[: end + 1], text[end + 2 :]


def _description(name: str) -> str:
    from relaysim.sims.scenario import builtin_scenarios, load_scenario

    path = builtin_scenarios().get(name)
    if path is None:
        return ""
    try:
        return load_scenario(path).description or ""
    except Exception:  # a builtin that no longer loads: the report goes on without the prose
        return ""


def _single_sections(run: Path, summary: dict[str, Any], prefix: str = "") -> list[tuple[str, str, str]]:
    duration = summary.get("duration_s")
    if duration is not None and not finite_number(duration):
        raise ReportError(
            f"{run / 'summary.json'}: duration_s: expected the run's length in seconds, got "
            f"{json.dumps(duration)[:40]}{_again(run)}"
        )
    events = _read_events(run)
    days = (duration or 0) > 86400
    source = f"{prefix.rstrip('-') + '/' if prefix else ''}transcript.jsonl"
    try:
        timeline = _timeline(events, days, source, prefix)
    except _TIMELINE_ERRORS as exc:
        from relaysim.sims.report import first_unread, run_again, unread_reason

        # the line of the one the timeline cannot read alone, or of the one completing a fault of two
        line = first_unread(events, lambda one: _timeline_rows(one, days), _TIMELINE_ERRORS)
        raise ReportError(
            f"{run / 'transcript.jsonl'} holds an event this version of relaysim does not read "
            f"({f'line {line}: ' if line else ''}{unread_reason(exc)}: missing or malformed); {run_again(run)}"
        ) from None
    try:
        graph = _graph(run, prefix)
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
        raise ReportError(
            f"{run / 'analysis'} holds a page this version of relaysim does not read ({exc!r}); write it "
            f"again with: relaysim analyze {shell_word(run)}"
        ) from None
    sections = [
        ("timeline", "Timeline: the phones and the relay", timeline),
        ("orders", "Legal orders: asked, given, and why not", _legend(prefix) + _orders(run, days)),
        ("graph", "The contact graph: true and rebuilt", graph),
    ]
    if (run / "exceptional").is_dir():
        sections.append(("exceptional", "Exceptional access", _exceptional(run, prefix)))
    return sections


def render_report(run: Path) -> str:
    """The report for a finished run's folder (a run, a comparison or the FBI chart) as HTML text."""
    run = Path(run)
    summary_file = run / "summary.json"
    link = broken_link(summary_file)
    if link is not None:  # (a loop of links was "no summary.json")
        from relaysim.sims.report import run_again

        raise ReportError(f"{summary_file}: {link}; {run_again(run)}")
    if (
        not summary_file.exists()
    ):  # (a folder or a pipe there is read, and said to be one: not "no summary.json")
        variants = sorted(p.parent.name for p in run.glob("*/summary.json"))
        if (run / "defences.json").is_file() and variants:  # (it was told to make a run there)
            raise ReportError(
                f"{run} holds relaysim defences' runs, one per variant, in folders of their own; report one, "
                f"e.g.: relaysim report {shell_word(run / variants[0])}   (variants: {', '.join(variants)})"
            )
        from relaysim.sims.report import make_run_command

        raise ReportError(
            f"{run} holds no finished run (no summary.json); make one with: {make_run_command(run)}"
        )
    summary = _load(summary_file)
    if not isinstance(summary, dict):
        raise ReportError(f"{summary_file}: expected a JSON object, got {type(summary).__name__}")
    name = str(summary.get("scenario", run.name))
    lead = _lead(summary, _description(name), summary_file)
    legend = "<h3>Colours</h3>" + _legend()
    if (run / "matrix.json").is_file():
        sections = [
            (
                "matrix",
                "The FBI chart: every provider, every process",
                legend + _matrix(_matrix_data(run / "matrix.json")),
            )
        ]
    elif (run / "comparison.json").is_file():
        profiles = summary.get("compare_profiles") or []
        if not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
            odd = (
                profiles
                if not isinstance(profiles, list)
                else next(p for p in profiles if not isinstance(p, str))
            )
            raise ReportError(
                f"{summary_file}: compare_profiles: expected a list of profiles' names, got "
                f"{'' if odd is profiles else 'a list holding '}{type(odd).__name__}{_again(run)}"
            )
        for i, p in enumerate(profiles):  # each a folder in this one: never ../x or /etc, a folder outside it
            problem = plain_name_problem(p, "a profile's name, the folder of its run in this one")
            if problem is not None:
                raise ReportError(f"{summary_file}: compare_profiles[{i}]: {problem}{_again(run)}")
        sections = [
            (
                "comparison",
                "Side by side: " + " beside ".join(profiles),
                legend + _comparison(run, _comparison_data(run / "comparison.json")),
            )
        ]
        for p in profiles:
            sub = run / p
            if (sub / "summary.json").is_file():
                slug = _id(p)  # in the page's ids, hrefs and data- attributes
                own = _load(sub / "summary.json", run)
                if not isinstance(own, dict):  # (a list: AttributeError to the last-resort handler)
                    raise ReportError(
                        f"{sub / 'summary.json'}: expected a JSON object, got {type(own).__name__}{_again(run)}"
                    )
                sections += [
                    (f"{slug}-{sid}", f"{p}: {title}", content)
                    for sid, title, content in _single_sections(sub, own, f"{slug}-")
                ]
    else:
        sections = _single_sections(run, summary)
    return _page(name, lead, sections)


def write_report(run: Path) -> Path:
    """Write ``run/report.html``; its path."""
    text = render_report(run)
    path = Path(run) / REPORT_FILE
    try:
        write_whole(own_file(Path(run), REPORT_FILE), text)
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
