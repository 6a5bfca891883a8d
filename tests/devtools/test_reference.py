"""docs/building-blocks.md is what `python -m devtools.reference` writes from the code now, and every
public class documents each constructor argument and what it returns, pushes to XCom or yields."""

from __future__ import annotations

import pytest

from azureml_retrain.operators import PatchEndpointOperator, SubmitBesJobOperator, UpdateWebServiceDefinitionOperator
from azureml_retrain.operators.promote import _PromoteBase
from azureml_retrain.triggers import ArmOperationTrigger
from devtools import reference


def without_field(docstring: str | None, field: str) -> str:
    """``docstring`` without the field that starts with ``field`` (and its continuation lines)."""
    lines = (docstring or "").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(field))
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and len(lines[end]) - len(lines[end].lstrip()) > indent and lines[end].strip():
        end += 1
    return "\n".join(lines[:start] + lines[end:])


def test_the_page_is_what_the_generator_writes_now():
    assert reference.PAGE.read_text() == reference.render(), (
        f"{reference.PAGE.name} is stale: run `{reference.COMMAND}` and commit the page"
    )


def test_the_page_covers_every_public_class():
    assert sorted(cls.__name__ for cls in reference.public_classes()) == [
        "ArmOperationTrigger",
        "AzureMLClassicManagementHook",
        "AzureMLLink",
        "AzureMLResourceManagerHook",
        "AzureMLWebServiceHook",
        "BesJobTrigger",
        "BlobArrivalSensor",
        "BlobArrivalTrigger",
        "EvaluateModelOperator",
        "PatchEndpointOperator",
        "SubmitBesJobOperator",
        "UpdateWebServiceDefinitionOperator",
    ]


@pytest.mark.parametrize("cls", reference.public_classes(), ids=lambda cls: cls.__name__)
def test_every_public_class_documents_its_arguments_and_results(cls):
    assert reference.problems(cls) == []


def test_an_argument_without_a_param_line_is_named_with_its_class(monkeypatch):
    # Documented once, in the base class: both promotion operators lose it.
    monkeypatch.setattr(_PromoteBase, "__doc__", without_field(_PromoteBase.__doc__, ":param verify_timeout:"))
    for cls in (PatchEndpointOperator, UpdateWebServiceDefinitionOperator):
        assert reference.problems(cls) == [
            f"{cls.__name__}: argument 'verify_timeout' has no ':param verify_timeout:' line"
        ]


def test_a_param_line_must_say_templated_exactly_for_template_fields(monkeypatch):
    monkeypatch.setattr(
        SubmitBesJobOperator,
        "__doc__",
        SubmitBesJobOperator.__doc__.replace("(names case-sensitive). (templated)", "(names case-sensitive).").replace(
            "reattaching retry keeps the original deadline).", "reattaching retry keeps the deadline). (templated)"
        ),
    )
    assert reference.problems(SubmitBesJobOperator) == [
        "SubmitBesJobOperator: argument 'global_parameters' is in template_fields; its ':param:' line must say "
        "'(templated)'",
        "SubmitBesJobOperator: argument 'job_timeout' is not in template_fields; its ':param:' line says '(templated)'",
    ]


def test_an_operator_without_its_return_value_or_a_pushed_xcom_key_is_named(monkeypatch):
    docstring = without_field(SubmitBesJobOperator.__doc__, ":returns:")
    monkeypatch.setattr(SubmitBesJobOperator, "__doc__", without_field(docstring, ":xcom bes_job_id:"))
    assert reference.problems(SubmitBesJobOperator) == [
        "SubmitBesJobOperator: no ':returns:' line (what the task returns: its return_value XCom)",
        "SubmitBesJobOperator: pushes the XCom key 'bes_job_id' but has no ':xcom bes_job_id:' line",
    ]


def test_a_param_line_of_no_argument_and_a_trigger_without_events_are_named(monkeypatch):
    docstring = ArmOperationTrigger.__doc__ or ""
    for event in ("terminal", "timeout", "error"):
        docstring = without_field(docstring, f":event {event}:")
    monkeypatch.setattr(ArmOperationTrigger, "__doc__", docstring + "\n    :param interval: renamed since.\n")
    assert reference.problems(ArmOperationTrigger) == [
        "ArmOperationTrigger: ':param interval:' names no argument",
        "ArmOperationTrigger: no ':event kind:' line (the events it yields)",
    ]


def test_markdown_keeps_table_cells_and_placeholders_readable():
    cell = reference.cell('``"a" | "b"`` of :class:`~azureml_retrain.links.AzureMLLink`, <experiment> ``<x>``')
    assert cell == '`"a" \\| "b"` of `AzureMLLink`, &lt;experiment> `<x>`'
