"""``python -m relaysim``: the ``relaysim`` command."""

from relaysim.sims.cli import main

if __name__ == "__main__":  # not when imported (a spawned worker's preparation, a test)
    raise SystemExit(main())
