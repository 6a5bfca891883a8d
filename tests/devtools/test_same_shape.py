"""The parse benchmarks' same-shape baseline: EmptyOperator DAGs that differ from the retraining DAGs
in what their tasks are, and in nothing else the DAG processor pays for."""

from __future__ import annotations

import json

from airflow.dag_processing.dagbag import BundleDagBag

from azureml_retrain.factory import retraining_dags
from devtools.bench.parse_cost import SAME_SHAPE_TEMPLATE
from devtools.bench.parse_probe import dag_shape
from devtools.services import ROOT


def test_same_shape_dags_keep_schedule_edges_and_form(tmp_path):
    shipped = retraining_dags(ROOT / "dags" / "retraining")
    path = tmp_path / "same_shape.py"
    shape = json.dumps([dag_shape(dag) for dag in shipped.values()])
    path.write_text(SAME_SHAPE_TEMPLATE.format(name="retraining_dags.py", shape=shape))
    bag = BundleDagBag(dag_folder=path, bundle_path=tmp_path, bundle_name="dags-folder", load_op_links=False)
    assert not bag.import_errors
    baseline = {dag_id.removeprefix("same_shape_"): dag for dag_id, dag in bag.dags.items()}
    assert set(baseline) == set(shipped)
    for dag_id, dag in shipped.items():
        twin = baseline[dag_id]
        assert {t.task_type for t in twin.tasks} == {"EmptyOperator"}
        assert type(twin.timetable) is type(dag.timetable), dag_id
        assert getattr(twin.timetable, "expression", None) == getattr(dag.timetable, "expression", None), dag_id
        # The same graph: task i of the twin has the upstreams of the i-th task of the DAG.
        assert [sorted(twin.tasks.index(u) for u in t.upstream_list) for t in twin.tasks] == [
            sorted(dag.tasks.index(u) for u in t.upstream_list) for t in dag.tasks
        ], dag_id
        assert {k: p.schema for k, p in twin.params.items()} == {k: p.schema for k, p in dag.params.items()}, dag_id
    # The retraining DAGs are scheduled and wired: the checks above compared something.
    assert any(getattr(d.timetable, "expression", None) for d in shipped.values())
    assert any(t.upstream_task_ids for d in shipped.values() for t in d.tasks)
