"""HTTP routes, one module per API plane; each handler parses, calls one service method, answers."""

from __future__ import annotations
