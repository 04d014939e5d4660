"""relaysim: a simulator of end-to-end encrypted messaging.

Installed, the distribution is one package: ``relaysim.clients`` (the device), ``relaysim.relay`` (the
relay) and ``relaysim.sims`` (scenarios, the simulator, the ``relaysim`` command). In the repository they are
the top-level folders ``clients/``, ``relay/`` and ``sims/``, which ``relaysim/`` links to; docs/architecture.md.
"""
