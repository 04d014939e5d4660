"""What metadata reveals: analyses that see only what the provider sees.

Inputs are the provider's own — a relay's database read under a profile, a tap's collection,
a disclosure package (:mod:`sims.analysis.view`) — never the simulator's ground truth (the
transcript's plaintext and senders, the scenario's people). The fence is enforced by imports:
this package imports nothing from the simulator, the clients or the rest of ``sims`` (only
``relay.metadata`` and ``relay.profiles``, the stdlib, numpy and networkx); a test parses every
import. Each analysis returns inferred facts; scoring them against ground truth is
``sims.analysis_scoring``.

- :mod:`~sims.analysis.graph`: the contact graph from message and look-up logs and address books;
- :mod:`~sims.analysis.attribution`: the sender of each sealed-sender message, by address and connection;
- :mod:`~sims.analysis.sda`: the statistical disclosure attack on sealed sender (Martiny et al., NDSS 2021);
- :mod:`~sims.analysis.sizes`: first contacts and length classes from envelope sizes;
- :mod:`~sims.analysis.life`: daily rhythm, location trail, co-location;
- :mod:`~sims.analysis.traits`: sensitive traits from whom people contact, given a public directory
  of organisation accounts (MetaPhone: Mayer, Mutchler and Mitchell, PNAS 113(20), 2016);
- :mod:`~sims.analysis.run`: all of them on one view, or on a finished run;
- :mod:`~sims.analysis.runfiles`: reading a run's files back (JSON that cannot take the process down) and
  writing into its folder (never through a symbolic link), for the analyses and the commands alike.
"""
