"""A protocol-faithful local emulator of Azure Machine Learning Studio (classic) web service APIs.

Planes served on one HTTP listener (disjoint paths): BES jobs and RRS scoring (data plane), the
classic management plane, ARM ``Microsoft.MachineLearning/webServices``, plus an OAuth2 token
authority on a TLS listener and an admin API under ``/_emulator/``. See ``emulator/README.md``.
"""

from __future__ import annotations
