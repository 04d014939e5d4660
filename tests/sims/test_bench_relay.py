"""``relaysim bench relay`` runs end to end at a tiny size and reports every contender and ratio (no timing claims)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from relaysim.relay import wire
from relaysim.relay.core import MEMBERS_PER_TOKEN, ConnectionContext, Push, Reply
from relaysim.relay.metadata import MetadataRecord, RecordKind
from relaysim.relay.wire import Request
from relaysim.sims.bench import relay


def test_runs_on_the_installed_trio_json_has_every_contender_and_check_names_what_was_missed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The servers run in child processes on the trio installed here; the load generator and the
    # ratios are in this process. One bound no run can meet, judged by the real ratio and check code.
    impossible = relay.Ratio(
        "relay_vs_echo_frames",
        "relay (durable) / echo, frames per second",
        ">=",
        1e9,
        relay.RELAY_DURABLE,
        relay.ECHO,
    )
    monkeypatch.setattr(relay, "RATIOS", [impossible, *relay.RATIOS[1:]])
    argv = ["--connections", "8", "--duration", "0.3", "--warmup", "0", "--repeat", "2"]
    assert relay.main([*argv, "--steps", "20", "--json", "-", "--check", "--quiet"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # --json -: stdout is the JSON alone
    assert "target MISSED: relay (durable) / echo, frames per second" in captured.err
    assert report["ratios"]["relay_vs_echo_frames"]["met"] is False
    assert report["config"]["connections"] == 8 and report["config"]["repeat"] == 2

    results = report["results"]
    assert set(results) == set(relay.CONTENDERS)
    for kind, r in results.items():
        samples = r["envelopes_per_s_samples"]
        assert len(samples) == 2 and all(math.isfinite(s) and s > 0 for s in samples), kind
        assert r["envelopes_per_s"] == pytest.approx(statistics.median(samples)), kind
        assert r["frames_per_s"] == pytest.approx(r["envelopes_per_s"] * relay.FRAMES_PER_ENVELOPE[kind])
        assert r["envelopes_timed"] > 0, kind
        latency = r["latency_ms"]
        assert latency["samples"] > 0 and 0 < latency["p50"] <= latency["p99"], kind
        assert r["client_cpu_share"] > 0, kind
        cpu = r["server_cpu_us_per_envelope"]  # None only where the server's CPU time is not known
        assert (cpu is None) is (r["server_cpu_share"] is None) and (cpu is None or cpu > 0), kind
        memory = report["memory"][kind]
        assert memory["bytes_per_connection"] is None or math.isfinite(memory["bytes_per_connection"])

    ratios = report["ratios"]
    assert {r.key for r in relay.RATIOS} | {relay.MEMORY.key} == set(ratios)
    for spec in relay.RATIOS:
        r = ratios[spec.key]
        num, den = results[spec.numerator], results[spec.denominator]
        value = num[spec.metric] / den[spec.metric]
        assert r["value"] == pytest.approx(value)
        assert r["met"] is (None if spec.bound is None else value >= spec.bound)
    assert {r.key: r.bound for r in relay.RATIOS if r.bound is not None} == {"relay_vs_echo_frames": 1e9}
    memory_row = ratios[relay.MEMORY.key]
    per = report["memory"][relay.RELAY_DURABLE]["bytes_per_connection"]
    assert memory_row["target"] == 8.0 and memory_row["comparison"] == "<="
    assert memory_row["value"] == (None if per is None else pytest.approx(per / 1024))

    breakdown = report["breakdown"]
    for kind in (relay.RELAY_DURABLE, relay.RELAY_VOLATILE):
        b = breakdown[kind]
        assert set(b["steps_us"]) == set(relay.STEP_LABELS)
        assert all(v > 0 for v in b["steps_us"].values())
        assert b["request_handling_us"] == pytest.approx(sum(b["steps_us"].values()))
        assert b["server_wall_us_per_envelope"] == pytest.approx(1e6 / results[kind]["envelopes_per_s"])
        assert b["core_group_commit_us"] > 0
    assert breakdown[relay.ECHO]["framing_us"] > 0

    table = captured.err  # the table goes to stderr when the JSON goes to stdout
    assert "targets (docs/performance.md)" in table and "where the time goes" in table
    assert "memory per idle connection" in table
    if results[relay.RELAY_DURABLE]["server_cpu_us_per_envelope"] is not None:
        assert "server CPU per envelope: relay durable" in table
    for kind in relay.CONTENDERS:
        assert results[kind]["label"] in table


def test_help_says_what_is_measured_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        relay.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--connections" in text and "echo" in text and "durable" in text
    assert "relaysim bench relay --connections" in text
    assert "--check" in text and "docs/performance.md" in text and "shared/" not in text


def test_the_default_targets_are_those_of_docs_performance_md() -> None:
    assert {r.key: (r.comparison, r.bound) for r in relay.RATIOS if r.bound is not None} == {
        "relay_vs_echo_frames": (">=", 0.5)
    }
    assert (relay.MEMORY.comparison, relay.MEMORY.bound) == ("<=", 8.0)


def test_bad_options_are_refused() -> None:
    with pytest.raises(SystemExit) as exc:
        relay.main(["--connections", "1"])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    "argv", [["--duration", "nan"], ["--duration", "inf"], ["--warmup", "nan"], ["--warmup", "inf"]]
)
def test_seconds_that_are_no_finite_number_are_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--duration nan`` passed the check (``nan <= 0`` is false) and the benchmark ran for ever."""
    with pytest.raises(SystemExit) as exc:
        relay.main(argv)
    assert exc.value.code == 2
    assert f"argument {argv[0]}: expected a number of seconds" in capsys.readouterr().err


@pytest.mark.parametrize("bench", [["relay"], ["relay", "--attack"]])
@pytest.mark.parametrize("size", [10**60, wire.DEFAULT_MAX_FRAME_SIZE + 1])
def test_a_body_size_past_a_frame_is_refused_naming_it(
    bench: list[str], size: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """--body-size had no upper bound: 10**60 was 'internal error: OverflowError: cannot fit 'int'
    into an index-sized integer' (the padding made of it), found by cli9's fuzz of the options. A
    body no frame can carry (past relay.wire.DEFAULT_MAX_FRAME_SIZE) is now a usage error."""
    from relaysim.sims.cli import main as relaysim

    with pytest.raises(SystemExit) as exc:
        relaysim(["bench", *bench, "--body-size", str(size)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(
        f"relaysim bench {' '.join(bench)}: error: argument --body-size: expected at most "
        f"{wire.DEFAULT_MAX_FRAME_SIZE:,} bytes (the largest frame the relay takes, "
        "relay.wire.DEFAULT_MAX_FRAME_SIZE), got "
    ), err


def test_relaysim_bench_relay_reaches_this_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    from relaysim.sims.cli import main as relaysim

    with pytest.raises(SystemExit) as exc:
        relaysim(["bench", "relay", "--help"])
    assert exc.value.code == 0
    assert "relaysim bench relay" in capsys.readouterr().out


# --- the attack bench (sims/bench/attack.py) ------------------------------------------------------


def test_the_attack_bench_runs_every_attack_against_a_relay_with_its_defaults(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from relaysim.sims.bench import attack

    # No timed claim: one bound no run can meet, to see --check name it; the rest is what the
    # relay's limits make of each attack, which does not depend on the machine's speed.
    monkeypatch.setattr(attack, "SHARE", 1e9)
    argv = ["--attack", "--good", "2", "--duration", "0.25", "--json", "-", "--check", "--quiet"]
    assert relay.main(argv) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert "target MISSED: good devices' throughput under memory / unattacked" in captured.err
    results = report["results"]
    assert list(results) == list(attack.ATTACKS)
    for name, r in results.items():
        assert r["attacker_requests"] > 0, name
        assert r["baseline"]["delivered"] > 0, name
        if _PROC_TASKS:  # each baseline started once the relay was idle (the last attack's work done)
            assert r["waited_for_idle_s"] is not None, name
        assert report["ratios"][f"good_share_{name}"]["met"] is False
    # one address gets at most the per-address cap of connection slots, and a newcomer still gets in
    assert results["slots"]["notes"]["sockets_kept_open_by_relay"] <= 64
    assert results["slots"]["notes"]["new_good_connection_answered"] is True
    # a register without a stamp is refused for want of one, every time
    assert set(results["register"]["attacker_answers"]) == {"registration_proof"}
    # the same answer for an existing and an absent account (and, once an address has asked for
    # 128 challenges, its login limit's refusal, whoever they were for)
    assert set(results["enumerate"]["attacker_answers"]) <= {
        "existing: authentication_failed",
        "absent: authentication_failed",
        "rate_limited",
    }
    # at most the per-target burst (10) of one-time prekeys per good account is drained
    assert results["drain"]["attacker_answers"].get("bundle with a one-time prekey", 0) <= 2 * 10 + 2
    # key uploads: at most each attacker device's burst (10) is taken, and what came back while the
    # attack wrote (a token every 10 s), the rest refused for the rate
    keys_s = results["keys"]["notes"]["attack_s"]
    assert results["keys"]["attacker_answers"].get("prekeys_uploaded", 0) <= 2 * (10 + math.ceil(keys_s / 10))
    # acks of 1,000 ids never received: the first of each account empties its bucket (1,000 ids), one
    # more passes once a token is back, then it takes 20 s to refill
    acks_s = results["acks"]["notes"]["attack_s"]
    assert results["acks"]["attacker_answers"].get("acked", 0) <= 2 * (2 + math.ceil(acks_s / 20))
    # the bucket attacks go on until the relay refused each connection for its rate, reading every
    # answer (the keys and acks attacks closed at the deadline, before the relay answered, and their
    # answers were empty): each bucket's whole burst served first (never fewer: the refusals come
    # once it is empty), then refusals. A read of the 1,024-member group takes 32 tokens.
    limits = attack.DEFAULT_LIMITS
    bursts = {
        name: rate.burst
        for name, rate in (
            ("keys", limits.keys_per_device),
            ("acks", limits.ack_unknown_per_account),
            ("keylog", limits.key_log_per_address),
            ("groupread", limits.group_reads_per_account),
            ("groupstate", limits.group_state_per_address),
        )
        if rate is not None
    }
    bursts["acks"] //= wire.MAX_ACK_IDS  # its tokens are ids: an ack of 1,000 empties it
    bursts["groupbig"] = bursts["groupread"] // -(-wire.MAX_GROUP_MEMBERS // MEMBERS_PER_TOKEN)
    for name, served, accounts in (
        ("keys", ("prekeys_uploaded",), 2),  # a bucket per device (attackers 6 and 7)
        ("acks", ("acked",), 2),  # a bucket per account (attackers 6 and 7)
        ("keylog", ("key_log_head", "key_log_consistency", "key_log_entries"), 1),  # one address
        ("groupread", ("group_info",), 2),
        ("groupbig", ("group_info",), 2),
        ("groupstate", ("group_state",), 1),
    ):
        answers = results[name]["attacker_answers"]
        assert set(answers) <= {*served, "rate_limited"}, (name, answers)
        assert answers.get("rate_limited", 0) > 0, name
        assert results[name]["notes"]["refused_on_every_connection"] is True, name
        assert sum(answers.get(k, 0) for k in served) >= accounts * bursts[name] > 0, (name, answers)
    # every slice follows its messages: each one sent was delivered, refused, or counted lost
    for name, r in results.items():
        for s in (r["baseline"], r["attacked"]):
            assert s["delivered"] + s["lost"] <= s["sent"], name
            assert s["cap_reached"] is (s["lost"] > 0), name
    memory = report["memory"]
    assert 0 < memory["peak_rss_kb"] < memory["ceiling_kb"]
    assert report["ratios"]["peak_rss_kb"]["met"] is True


# --- a good slice follows each message (sims/bench/attack.py good_slice) ----------------------------


async def _slice_through_a_fake_relay(
    hold: float | None, refuse_first: bool = False, duration: float = 0.3, refuse_acks: bool = False
) -> tuple[Any, int]:
    """Two good devices' slice through a relay of our own making, in memory: it answers each ``send``
    and delivers it at once, but for the first message of the first device, which it holds ``hold``
    seconds (a disk stall), never delivers (None), or refuses (``refuse_first``); with ``refuse_acks``
    it answers every ack with a ``rate_limited`` error. Returns the slice and how many messages the
    fake relay was sent."""
    import msgpack
    import trio
    import trio.testing

    from relaysim.sims.bench import attack

    names = [attack.account_name(i) for i in range(2)]
    pairs = [trio.testing.memory_stream_pair() for _ in names]
    goods = [attack.Client(client_end, name) for (client_end, _), name in zip(pairs, names, strict=True)]
    server_ends = {name: server_end for (_, server_end), name in zip(pairs, names, strict=True)}
    locks = {name: trio.Lock() for name in names}
    received = [0]

    async def write(to: str, frame: dict[str, Any]) -> None:
        body = msgpack.packb({"v": 1, **frame}, use_bin_type=True)
        async with locks[to]:
            await server_ends[to].send_all(len(body).to_bytes(4, "big") + body)

    async def deliver(to: str, body: bytes, after: float | None) -> None:
        if after is None:
            return  # lost in the relay
        await trio.sleep(after)
        await write(to, {"id": 0, "kind": "deliver", "envelope": {"id": bytes(16), "body": body}})

    async def serve(name: str, nursery: Any) -> None:
        reader = attack.Client(server_ends[name], name)  # (its read() parses the frames)
        while (f := await reader.read()) is not None:
            if f["kind"] != "send":  # acks
                if refuse_acks:
                    await write(
                        name, {"id": f["id"], "kind": "error", "code": "rate_limited", "message": "."}
                    )
                continue
            received[0] += 1
            first = received[0] == 1 and name == names[0]
            if first and refuse_first:
                await write(name, {"id": f["id"], "kind": "error", "code": "rate_limited", "message": "."})
                continue
            await write(name, {"id": f["id"], "kind": "sent", "envelope_ids": [bytes(16)]})
            nursery.start_soon(deliver, f["to"], f["envelopes"][0]["body"], hold if first else 0.0)

    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(serve, name, nursery)
        out = await attack.good_slice(goods, 20.0, duration, 16)
        nursery.cancel_scope.cancel()
    return out, received[0]


def test_a_slice_counts_a_late_delivery_as_delivered_not_lost() -> None:
    """A message the relay delivers after the slice's sending is over (a stall of its disk) is counted,
    with its latency: the slice waits for it, so "delivered" means "not lost", not "on time"."""
    import trio

    duration = 0.3
    # held past where the slice stopped counting before (its end + min(1 s, duration)), from its send
    out, sent = trio.run(_slice_through_a_fake_relay, duration + min(1.0, duration) + 0.3)
    assert sent > 2
    assert out.delivered == sent  # the late one too
    assert out.sent == sent and len(out.latencies_ms) == sent
    assert out.lost == 0 and out.cap_reached is False
    assert out.late >= 1  # it arrived after the old window closed
    assert max(out.latencies_ms) >= 1000 * (duration + min(1.0, duration))  # (a lower bound: it was held)


def test_a_slice_counts_a_message_never_delivered_as_lost_once_its_cap_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import trio

    from relaysim.sims.bench import attack

    monkeypatch.setattr(attack, "_ARRIVAL_CAP", 0.5)
    out, sent = trio.run(_slice_through_a_fake_relay, None)
    assert out.delivered == sent - 1
    assert out.sent == sent
    assert out.lost == 1 and out.cap_reached is True
    summary = attack._summary(out)
    assert (summary["sent"], summary["delivered"], summary["lost"], summary["cap_reached"]) == (
        sent,
        sent - 1,
        1,
        True,
    )


def test_a_slice_does_not_wait_for_a_message_the_relay_refused() -> None:
    """A refused send will never arrive: the slice counts the refusal and ends without its cap."""
    import trio

    out, sent = trio.run(_slice_through_a_fake_relay, 0.0, True)
    assert out.refused == {"rate_limited": 1}
    assert out.delivered == sent - 1 == out.sent - 1
    assert out.lost == 0 and out.cap_reached is False


def test_a_slice_counts_refused_acks_apart_from_refused_messages() -> None:
    """An error answering an ack (the relay rate-limits a good device's acks) refuses no message:
    ``refused`` counts the slice's refused sends only, the rest is ``other_errors``."""
    import trio

    from relaysim.sims.bench import attack

    out, sent = trio.run(_slice_through_a_fake_relay, 0.0, True, 0.3, True)
    assert out.refused == {"rate_limited": 1}  # the one send refused
    # an ack of each delivered message, those answered before the slice ended (the last may not be)
    assert list(out.other_errors) == ["rate_limited"] and 1 <= out.other_errors["rate_limited"] <= sent - 1
    assert out.delivered == sent - 1 and out.lost == 0
    summary = attack._summary(out)
    assert (summary["refused"], summary["other_errors"]) == (out.refused, out.other_errors)


_PROC_TASKS = Path("/proc/self/task").is_dir()

# Busy for a fixed amount of work (however long the machine takes), then says so and sleeps.
_BUSY_THEN_IDLE = """
import sys, time
n = 0
for i in range(5_000_000):
    n += i
open(sys.argv[1], "w").write("done")
time.sleep(600)
"""


@pytest.mark.skipif(not _PROC_TASKS, reason="reads Linux /proc")
def test_a_baseline_waits_until_the_relay_process_is_idle(tmp_path: Path) -> None:
    """An attack leaves work in the relay (the keys attack's uploads, answered after it closed): the
    next baseline starts only once no thread of the relay process runs, however slow the machine."""
    import subprocess
    import sys

    import trio

    from relaysim.sims.bench import attack

    marker = tmp_path / "done"
    child = subprocess.Popen([sys.executable, "-c", _BUSY_THEN_IDLE, str(marker)])
    try:
        waited = trio.run(attack.until_idle, lambda: attack.busy_threads(child.pid), 0.0)
        assert marker.read_text() == "done"  # its work was over when the wait ended
        assert waited is not None
        assert attack.busy_threads(child.pid) == 0
    finally:
        child.kill()
        child.wait()
    assert attack.busy_threads(child.pid) is None  # gone: /proc cannot tell


def test_without_proc_a_baseline_waits_a_fixed_pause_and_a_relay_never_idle_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import trio

    from relaysim.sims.bench import attack, harness

    assert trio.run(attack.until_idle, lambda: None, 0.01) is None
    monkeypatch.setattr(attack, "_IDLE_TIMEOUT", 0.2)  # the hang guard, shortened
    with pytest.raises(harness.BenchError, match="still busy"):
        trio.run(attack.until_idle, lambda: 1, 0.01)


def test_the_steps_run_in_batches_as_the_server_does_each_ack_a_batch_after_its_send(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The breakdown times the server's work as its loop does it: GROUP requests to a transaction
    (``begin_group`` … ``commit_group``), the acks of one batch's envelopes in the next one (they come
    back a round trip later), and the batch's COMMIT and fsync as steps of their own."""
    rig = relay.StepRig(True, 64, str(tmp_path))
    batch = 0
    sent_in: dict[bytes, int] = {}
    acked_in: dict[bytes, int] = {}
    begin, handle = rig.store.begin_group, rig.core.handle

    def counting_begin() -> None:
        nonlocal batch
        batch += 1
        begin()

    def recording_handle(ctx: ConnectionContext, frame: Request) -> list[Reply | Push | MetadataRecord]:
        outputs = handle(ctx, frame)
        if isinstance(frame, relay.wire.Ack):
            for envelope_id in frame.envelope_ids:
                acked_in[envelope_id] = batch
        for o in outputs:
            if isinstance(o, Reply) and isinstance(o.frame, relay.wire.Sent):
                for envelope_id in o.frame.envelope_ids:
                    sent_in[envelope_id] = batch
        return outputs

    monkeypatch.setattr(rig.store, "begin_group", counting_begin)
    monkeypatch.setattr(rig.core, "handle", recording_handle)
    try:
        steps = rig.steps(relay.GROUP + 30)
    finally:
        rig.close()  # asserts that every envelope was acknowledged
    assert set(steps) == {*relay.STEP_LABELS, "sync"}
    assert all(v >= 0 for v in steps.values()) and steps["commit"] > 0
    assert batch == 3  # 100 sends; 30 sends + 100 acks; 30 acks
    assert len(sent_in) == relay.GROUP + 30 and set(acked_in) == set(sent_in)
    assert all(acked_in[e] == sent_in[e] + 1 for e in sent_in)


# --- --profile: the relays keep what `relay serve --profile NAME` keeps (information) ------------


@pytest.mark.parametrize(("profile", "per_envelope"), [(None, 3), ("signal", 0)])
def test_the_step_rig_keeps_what_the_profile_keeps(
    tmp_path: Path, profile: str | None, per_envelope: int
) -> None:
    """Without a profile every envelope leaves its send, delivery and acknowledgement records (the
    case the target judges); under ``signal`` none of them (no who-messaged-whom row)."""
    rig = relay.StepRig(True, 64, str(tmp_path), profile)
    try:
        rig.steps(10)
        kinds = (RecordKind.SEND, RecordKind.DELIVERY, RecordKind.ACKNOWLEDGEMENT)
        kept = sum(len(rig.store.metadata(kind)) for kind in kinds)
    finally:
        rig.close()
    assert kept == 10 * per_envelope


def test_a_profile_run_says_so_and_check_is_refused_with_one(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--connections", "4", "--duration", "0.2", "--warmup", "0", "--repeat", "1", "--steps", "10"]
    with pytest.raises(SystemExit) as exc:
        relay.main([*argv, "--profile", "signal", "--check"])
    assert exc.value.code == 2
    assert "--check judges the targets" in capsys.readouterr().err
    assert relay.main([*argv, "--profile", "signal", "--json", "-", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["config"]["profile"] == "signal"
    assert "the relays keep what `relay serve --profile signal` keeps" in captured.err
    with pytest.raises(SystemExit) as exc:
        relay.main([*argv, "--profile", "no-such-provider"])
    assert exc.value.code == 2


def test_the_servers_are_given_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    class _Popen:  # the command only: no process
        def __init__(self, cmd: list[str], **_kwargs: object) -> None:
            seen.append(cmd)

    monkeypatch.setattr(relay.subprocess, "Popen", _Popen)
    relay.ServerProcess(relay.RELAY_DURABLE, 4, 1, "x.db", "signal")
    cmd = seen[0]
    args = relay._child_parser().parse_args(cmd[cmd.index("--child") :])
    assert args.profile == "signal"
    assert relay.relay_options(args.profile)["policy"] is relay.PROFILES["signal"].policy
    assert relay.relay_options(None) == {}
