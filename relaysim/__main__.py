"""``python -m relaysim``: the ``relaysim`` command."""

from relaysim.sims.cli import main

raise SystemExit(main())
