"""`make e2e-distributed` as part of `make test`: the compose topology (PostgreSQL, Redis, api-server,
scheduler, dag-processor, triggerer, two Celery workers, the emulator, Azurite) as local processes
runs both retraining DAGs to success while a Celery worker is SIGKILLed mid-run.

The same entry point as the make target (``devtools.distributed.run``); it asserts as it goes, and
these lines restate the acceptance criteria. About 3-4 minutes on a 2-core machine.
"""

from __future__ import annotations

import pytest

from devtools import distributed

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.timeout(900)]


def test_compose_topology_retrains_and_survives_a_celery_worker_kill():
    outcome = distributed.run(kill_worker=True)
    print(distributed.summary(outcome))

    assert outcome.states == {"retrain_churn": "success", "retrain_energy": "success"}
    # The killed worker was running churn's training after it had submitted its BES job; the retry
    # on the other worker reattached to that job instead of submitting another.
    assert outcome.killed_worker in ("worker-1", "worker-2")
    assert outcome.killed_try == 1 and outcome.final_try == 2
    assert outcome.bes_submits == {"retrain_churn": 1, "retrain_energy": 1}
    # Every target serves the run's model now, and answers differently for the same rows.
    for target, model in outcome.served_after.items():
        assert model is not None and model != outcome.served_before[target]
    assert outcome.predictions_after != outcome.predictions_before
    assert outcome.leftover_pids == []
