"""The bench's Airflow on PostgreSQL (``python -m devtools.bench --database postgresql``): every
component keeps its metadata there, none in a SQLite file.

It starts the bench's shared cluster as the measurements that run on Airflow do (:attr:`Bench.cluster`),
with a PostgreSQL server of its own from Debian's packages (installed if missing, as root).
"""

from __future__ import annotations

import shutil

import pytest
import sqlalchemy

from devtools.bench.core import Bench

pytestmark = [pytest.mark.bench, pytest.mark.integration, pytest.mark.cluster]

# The components that record themselves in the metadata database's job table while they run.
JOB_TYPES = {"SchedulerJob", "TriggererJob", "DagProcessorJob"}


@pytest.mark.timeout(240)
def test_bench_cluster_keeps_its_metadata_in_postgresql() -> None:
    # A new temp dir (not pytest's tmp_path, whose parents PostgreSQL's own user may not enter as root).
    bench = Bench(smoke=True, database="postgresql", log=lambda _: None)
    try:
        cluster = bench.cluster
        url = cluster.airflow("config", "get-value", "database", "sql_alchemy_conn").strip()
        assert url.startswith("postgresql"), url
        assert cluster.health()["metadatabase"]["status"] == "healthy"
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
        try:
            with engine.connect() as connection:
                running = connection.execute(sqlalchemy.text("SELECT job_type FROM job WHERE state = 'running'"))
                assert {row.job_type for row in running} >= JOB_TYPES
        finally:
            engine.dispose()
        assert not list(bench.home.glob("*.db")), "a SQLite database was created beside PostgreSQL"
    finally:
        bench.stop()
        shutil.rmtree(bench.work, ignore_errors=True)
