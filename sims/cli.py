"""The ``relaysim`` command.

    relaysim demo                      two phones talk; see what the relay sees
    relaysim bench crypto              the ratchet and session set-up against their peers
    relaysim relay serve --port 7465   run a relay on loopback

Each subcommand has its own ``--help`` with an example.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]

EPILOG = """examples:
  relaysim demo
  relaysim bench crypto --messages 2000
  relaysim relay serve --host 127.0.0.1 --port 7465 --db relay.db
"""


def _demo(args: argparse.Namespace) -> int:
    from sims.demo import render, run_demo

    print(render(run_demo(args.seed), width=args.width))
    return 0


def _bench(args: argparse.Namespace, rest: list[str]) -> int:
    if args.what == "crypto":
        from sims.bench.crypto import main as bench_crypto

        return bench_crypto(rest)
    if args.what == "relay":
        from sims.bench.relay import main as bench_relay

        return bench_relay(rest)
    raise AssertionError(args.what)


def _relay(args: argparse.Namespace, rest: list[str]) -> int:
    from relay.server import main as relay_main

    return relay_main(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relaysim",
        description=(
            "A simulator of end-to-end encrypted messaging: phones running Signal's protocols, a relay "
            "that sees only routing metadata, and what legal process served on it can reveal."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="two phones run PQXDH and talk; see each message beside the bytes that travel",
        description=(
            "Two simulated phones publish prekey bundles, run PQXDH, and exchange a short conversation "
            "with replies and one late message. Each line shows the message as the phones see it beside "
            "the bytes the relay would carry."
        ),
        epilog="example:\n  relaysim demo --seed 7",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--seed", type=int, default=2015, help="seed for the phones' keys (default: 2015)")
    demo.add_argument("--width", type=int, default=110, help="width of the table in columns (default: 110)")

    bench = sub.add_parser(
        "bench",
        help="benchmarks that print ratios against baselines measured in the same run",
        description="Benchmarks. Each prints absolute times and, more usefully, ratios to baselines run alongside.",
        epilog="examples:\n  relaysim bench crypto\n  relaysim bench crypto --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("what", choices=["crypto", "relay"], help="which benchmark; its own options follow")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    relay = sub.add_parser(
        "relay",
        help="run the relay server (relaysim relay serve --help)",
        description="Run the relay: a trio TCP server over a SQLite store.",
        epilog="example:\n  relaysim relay serve --host 127.0.0.1 --port 7465 --db relay.db",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    relay.add_argument("action", choices=["serve"], help="what to do; its own options follow")
    relay.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # bench and relay hand everything after their first word to their own parsers
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    if args.command == "bench":
        return _bench(args, args.rest)
    if args.command == "relay":
        return _relay(args, args.rest)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
