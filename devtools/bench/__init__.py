"""Benchmarks: what orchestration costs, side by side with what users would otherwise run.

``python -m devtools.bench [--smoke] [--out FILE] [--only NAME ...] [--database sqlite|postgresql|both]``
(``make bench``, ``make bench-postgres``, ``make bench-smoke``) starts fresh local services (Azurite and
the emulator, in memory) and, for the measurements that need it, an Airflow installation with separate
scheduler, triggerer, DAG processor and API server (LocalExecutor, 4 worker slots) whose metadata
database is SQLite (the default) or a PostgreSQL server of its own from Debian's packages; ``both``
runs the measurements on Airflow (2, 3, 6, 7, 8) on each in turn, the others once. It prints a table of
ratios against baselines measured in the same run, each row with the database it ran on, and writes
every raw number to a JSON file. One module per measurement, numbered as in the table:

1. ``parse_cost``: DAG parse cost of each shipped DAG file against a one-task EmptyOperator DAG
2. ``worker_slots``: N concurrent 30 s BES jobs, deferrable vs the Studio sample's polling loop
3. ``loop_latency``: data lands -> the endpoint serves the new model, minus the BES job's own time
4. ``sensor_listing``: list requests and time per check as unrelated blobs pile up
5. ``status_calls``: HTTP calls spent on a 10-minute BES job vs the Studio sample's 1 s loop
6. ``scale``: a backfill of daily windows, and promotion fan-out to 1, 10, 50 endpoints (in the smoke
   run: the promotion task instances for 50 targets, and one task's batch of 10 endpoints vs 1)
7. ``models``: parse cost per model and the scheduler's loop time with 1, 10 and 100 models
8. ``backfill``: a real 30-window backfill, four runs at once: overhead per window vs one run's loop latency

``--smoke`` runs a reduced set in well under two minutes and exits non-zero when a ratio is past its
target; the test suite runs it (``tests/bench/test_bench_smoke.py``).
"""
