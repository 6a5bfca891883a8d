"""RRS scoring through real HTTP: the three request/response shapes and the input errors."""

from __future__ import annotations

import pytest

from support.emulator import CHURN_COLUMNS, CHURN_ROWS, ENERGY_COLUMNS, ENERGY_ROWS, error_codes, table_request


def test_details_true_shape(churn_scoring):
    response = churn_scoring.execute(table_request(CHURN_COLUMNS, CHURN_ROWS))
    assert response.status_code == 200, response.text
    output = response.json()["Results"]["output1"]
    assert output["type"] == "table"
    assert output["value"]["ColumnNames"] == ["Scored Labels", "Scored Probabilities"]
    assert output["value"]["ColumnTypes"] == ["String", "Double"]
    values = output["value"]["Values"]
    assert len(values) == 3
    for label, probability in values:
        assert label in ("Churner", "NonChurner")
        assert isinstance(probability, str)
        assert (float(probability) >= 0.5) == (label == "Churner")


def test_bare_shape_has_values_only(churn_scoring):
    response = churn_scoring.execute(table_request(CHURN_COLUMNS, CHURN_ROWS), query="")
    assert response.status_code == 200
    value = response.json()["Results"]["output1"]["value"]
    assert set(value) == {"Values"}
    assert len(value["Values"]) == 3


def test_swagger_shape_row_objects(churn_scoring):
    rows = [dict(zip(CHURN_COLUMNS, row, strict=True)) for row in CHURN_ROWS]
    response = churn_scoring.execute({"Inputs": {"input1": rows}, "GlobalParameters": {}}, query="format=swagger")
    assert response.status_code == 200, response.text
    results = response.json()["Results"]["output1"]
    assert [set(row) for row in results] == [{"Scored Labels", "Scored Probabilities"}] * 3
    table = churn_scoring.execute(table_request(CHURN_COLUMNS, CHURN_ROWS)).json()
    assert [row["Scored Probabilities"] for row in results] == [
        v[1] for v in table["Results"]["output1"]["value"]["Values"]
    ]


def test_regression_scores_are_numbers_as_strings(energy_scoring):
    response = energy_scoring.execute(table_request(ENERGY_COLUMNS, ENERGY_ROWS))
    assert response.status_code == 200, response.text
    value = response.json()["Results"]["output1"]["value"]
    assert value["ColumnNames"] == ["Scored Labels"]
    assert value["ColumnTypes"] == ["Double"]
    assert all(10 < float(row[0]) < 80 for row in value["Values"])


def test_numbers_in_json_are_accepted_and_label_column_is_ignored(churn_scoring):
    rows = [[3, 110, 4, 1, 30, "Churner"]]
    response = churn_scoring.execute(table_request([*CHURN_COLUMNS, "Churn"], rows))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("columns", "rows", "expected"),
    [
        (CHURN_COLUMNS, [["3", "x", "4", "1", "30"]], (400, "BadUserArgument", "InputParseError")),
        (CHURN_COLUMNS, [["3", "1"]], (400, "BadUserArgument", "InputParseError")),
        (CHURN_COLUMNS[:-1], [["3", "110", "4", "1"]], (400, "BadUserArgument", "InputMismatchError")),
        (
            [*CHURN_COLUMNS, "Colour"],
            [["3", "110", "4", "1", "30", "red"]],
            (400, "BadUserArgument", "InputMismatchError"),
        ),
    ],
)
def test_bad_rows(churn_scoring, columns, rows, expected):
    assert error_codes(churn_scoring.execute(table_request(columns, rows))) == expected


def test_unexpected_global_parameter_and_unknown_input(churn_scoring):
    body = table_request(CHURN_COLUMNS, CHURN_ROWS)
    body["GlobalParameters"] = {"Threshold": "0.3"}
    assert error_codes(churn_scoring.execute(body)) == (400, "BadUserArgument", "UnexpectedParameter")
    body = {"Inputs": {"input2": body["Inputs"]["input1"]}}
    assert error_codes(churn_scoring.execute(body)) == (400, "BadArgument", "InvalidInputNames")


def test_wrong_key_and_version(churn_scoring, emulator):
    training_key = emulator.classic_endpoint("training")["primary_key"]
    body = table_request(CHURN_COLUMNS, CHURN_ROWS)
    assert error_codes(churn_scoring.execute(body, key=training_key)) == (
        401,
        "Unauthorized",
        "ScoreRequestUnauthorized",
    )
    response = churn_scoring.execute(body, query="details=true&api-version=1.0")
    assert error_codes(response) == (400, "BadArgument", "BadVersionCall")


def test_swagger_document_is_served(emulator, energy_scoring):
    import requests

    response = requests.get(f"{energy_scoring.base}/swagger.json", timeout=30)
    assert response.status_code == 200
    document = response.json()
    assert document["swagger"] == "2.0"
    assert "/execute?api-version=2.0&format=swagger" in document["paths"]
