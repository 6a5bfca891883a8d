"""DAG files the benchmarks copy into a scratch DAG folder (they read ``bench_params.json`` there)."""
