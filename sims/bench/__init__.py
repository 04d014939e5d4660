"""Benchmarks behind ``relaysim bench ...``: each reports ratios to peers measured in the same run."""
