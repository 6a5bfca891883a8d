"""docs/configuration.md is what `python -m devtools.config_reference` writes from the config models
now: a field added, removed, retyped or re-described in plugins/azureml_retrain/config.py (or the
models it uses) makes the page stale, and a field without a description is named."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, create_model

from azureml_retrain.config import DataConfig, RetrainingConfig, TrainingConfig
from devtools import config_reference


def config_with(field: str, inner: type[BaseModel], **fields: Any) -> type[BaseModel]:
    """RetrainingConfig whose ``field`` holds ``inner`` with ``fields`` added or replaced."""
    changed = create_model(inner.__name__, __base__=inner, **fields)
    return create_model("RetrainingConfig", __base__=RetrainingConfig, **{field: (changed, ...)})


def test_the_page_is_what_the_generator_writes_now():
    assert config_reference.PAGE.read_text() == config_reference.render(), (
        f"{config_reference.PAGE.name} is stale: run `{config_reference.COMMAND}` and commit the page"
    )


def test_every_field_has_a_description():
    assert config_reference.undescribed() == []


def test_the_page_has_a_section_for_every_model_and_a_row_for_every_field():
    page = config_reference.render()
    found = config_reference.sections()[0]
    assert [section.model.__name__ for section in found] == [
        "RetrainingConfig",
        "TrainingConfig",
        "DataConfig",
        "OutputConfig",
        "EvaluationRules",
        "Guard",
        "ClassicEndpointTarget",
        "ArmWebServiceTarget",
        "PromotionConfig",
        "ApprovalRules",
        "ApprovalWhen",
    ]
    for section in found:
        heading = page.index(f"## {section.title}\n")
        table = page[heading:].split("\n## ", 1)[0]
        for name in section.model.model_fields:
            assert f"| `{name}` |" in table, f"{section.path}: {name}"


def test_a_new_field_makes_the_page_stale_and_without_a_description_is_named():
    model = config_with("data", DataConfig, max_files=(int, 10))
    assert "| `max_files` | integer | `10` |  |" in config_reference.render(model)
    assert config_reference.PAGE.read_text() != config_reference.render(model)
    assert config_reference.undescribed(model) == [
        "DataConfig.max_files (data): no description; add a string below the field"
    ]


def test_a_changed_default_or_bound_makes_the_page_stale():
    model = config_with("training", TrainingConfig, input_name=(str, "x"))
    assert '| `input_name` | string | `"x"` |' in config_reference.render(model)
    assert config_reference.PAGE.read_text() != config_reference.render(model)


def test_a_field_description_wins_over_its_attribute_docstring():
    from pydantic import Field

    model = config_with("data", DataConfig, marker=(str | None, Field(default=None, description="Said in the field.")))
    assert "| `marker` | string or null | `null` | Said in the field. |" in config_reference.render(model)


def test_attribute_docstrings_are_read_from_the_class_body():
    texts = config_reference.attribute_docstrings(DataConfig)
    assert texts["marker"].startswith("A blob written last")
    assert set(texts) == set(DataConfig.model_fields)


def test_headings_and_their_links_agree():
    assert config_reference.slug("targets[] (classic_endpoint)") == "targets-classic_endpoint"
    assert config_reference.slug("evaluation.guards[]") == "evaluationguards"
