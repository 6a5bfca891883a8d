"""Synthetic training data for the seeded experiments, deterministic by ``seed`` and ``window``.

``window`` models time: each window drifts the relationship between features and label, so a model
retrained on a later window really scores differently from the seed model (trained on window 0).
Tests, the demo and DAGs upload these CSVs to Azurite as BES inputs::

    python -m emulator.datasets churn --rows 400 --window 2 --seed 1 > churn.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DatasetSpec:
    features: tuple[str, ...]
    label: str
    generate: Callable[[np.random.Generator, int, int], dict[str, list[str]]]


def _churn(rng: np.random.Generator, rows: int, window: int) -> dict[str, list[str]]:
    tenure = rng.integers(1, 73, rows)
    monthly = np.round(rng.uniform(20.0, 120.0, rows), 2)
    calls = rng.poisson(1.5, rows)
    contract = rng.choice([1, 12, 24], rows)
    age = rng.integers(18, 81, rows)
    # Later windows: price sensitivity fades and support calls dominate.
    price_weight = 0.05 - 0.045 * window
    calls_weight = 0.6 + 0.6 * window
    logit = (
        -0.8
        - 0.08 * (tenure - 24)
        + price_weight * (monthly - 70)
        + calls_weight * (calls - 1.5)
        - 0.04 * (contract - 12)
        + 0.01 * (age - 45)
    )
    churned = rng.uniform(size=rows) < 1.0 / (1.0 + np.exp(-logit))
    return {
        "Tenure": [str(v) for v in tenure],
        "MonthlyCharges": [f"{v:.2f}" for v in monthly],
        "SupportCalls": [str(v) for v in calls],
        "ContractMonths": [str(v) for v in contract],
        "Age": [str(v) for v in age],
        "Churn": ["Churner" if c else "NonChurner" for c in churned],
    }


def _energy(rng: np.random.Generator, rows: int, window: int) -> dict[str, list[str]]:
    compactness = np.round(rng.uniform(0.62, 0.98, rows), 3)
    surface = np.round(rng.uniform(514.0, 808.0, rows), 1)
    wall = np.round(rng.uniform(245.0, 416.0, rows), 1)
    roof = np.round(rng.uniform(110.0, 220.0, rows), 1)
    height = rng.choice([3.5, 7.0], rows)
    glazing = np.round(rng.uniform(0.0, 0.4, rows), 2)
    # Later windows: better insulation lowers the baseline, glazing matters more.
    load = (
        6.0
        - 2.0 * window
        + 18.0 * (compactness - 0.6)
        + 0.01 * (surface - 500)
        + 0.03 * (wall - 250)
        - 0.05 * (roof - 110)
        + 3.2 * height
        + (20.0 + 25.0 * window) * glazing
        + rng.normal(0.0, 1.0, rows)
    )
    return {
        "RelativeCompactness": [f"{v:.3f}" for v in compactness],
        "SurfaceArea": [f"{v:.1f}" for v in surface],
        "WallArea": [f"{v:.1f}" for v in wall],
        "RoofArea": [f"{v:.1f}" for v in roof],
        "OverallHeight": [f"{v:.1f}" for v in height],
        "GlazingArea": [f"{v:.2f}" for v in glazing],
        "HeatingLoad": [f"{v:.2f}" for v in load],
    }


DATASETS: dict[str, DatasetSpec] = {
    "churn": DatasetSpec(
        features=("Tenure", "MonthlyCharges", "SupportCalls", "ContractMonths", "Age"),
        label="Churn",
        generate=_churn,
    ),
    "energy": DatasetSpec(
        features=("RelativeCompactness", "SurfaceArea", "WallArea", "RoofArea", "OverallHeight", "GlazingArea"),
        label="HeatingLoad",
        generate=_energy,
    ),
}


def generate_table(name: str, rows: int = 400, window: int = 0, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """Column names and rows (values as strings) of dataset ``name``."""
    spec = DATASETS[name]
    columns = [*spec.features, spec.label]
    values = spec.generate(np.random.default_rng([seed, window]), rows, window)
    return columns, [[values[column][i] for column in columns] for i in range(rows)]


def generate_csv(name: str, rows: int = 400, window: int = 0, seed: int = 0) -> str:
    """Dataset ``name`` as CSV text with a header row."""
    columns, table = generate_table(name, rows, window, seed)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(table)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator.datasets", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--window", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sys.stdout.write(generate_csv(args.dataset, args.rows, args.window, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
