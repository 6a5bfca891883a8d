"""The model history view: per serving target, its promotion ledger as a table and a plot of a metric.

``data`` reads what the view shows (the retraining configs say which targets and ledgers exist; the
ledger itself is read with :class:`azureml_retrain.ledger.PromotionLedger`), ``render`` turns it into
HTML with an inline SVG plot, and ``app`` serves both as a FastAPI app that the ``model_history``
Airflow plugin mounts in the Airflow API server (``plugins/model_history_plugin.py``).
"""

from __future__ import annotations
