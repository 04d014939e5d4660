"""``python -m relaysim``: the ``relaysim`` command."""

from relaysim.sims.cli import command

if __name__ == "__main__":  # not when imported (a spawned worker's preparation, a test)
    command()
