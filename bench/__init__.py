"""`make bench`: benchmarks measured against baselines run in the same invocation."""
