"""The world that runs: the deterministic event heap (``engine``), the network model
(``network``), generated people and traffic (``traffic``), the simulation that drives the real
device and relay cores in simulated time (``simulation``), and the seeded RNG and clock helpers
(``util``), and the timeline both drivers follow (``timeline``). docs/architecture.md shows how one message and one legal order flow through it."""
