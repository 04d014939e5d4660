"""sims: scenarios, the deterministic scheduler, analyses, reports and the relaysim CLI."""
