"""
Performance budgets: one ``budgets.json`` that load tests judge runs by
(:mod:`perfkit.load`) and that production alerts and dashboards watch.

:func:`load_budgets` reads and validates the file; :func:`prometheus_rules` turns it into
Prometheus recording and alerting rules (write them with :func:`to_yaml`);
:func:`grafana_dashboard` into a Grafana dashboard; :func:`duration_buckets` gives the
timing middleware a histogram boundary at every threshold. ``perfkit-budgets`` does the
same from the shell. No dependencies beyond perfkit's own.
"""

from __future__ import annotations

from ._budgets import Budget, BudgetError, Budgets, Check, duration_buckets, load_budgets
from ._grafana import grafana_dashboard
from ._prometheus import prometheus_rules
from ._promql import le_label
from ._yaml import to_yaml

__all__ = [
    "Budget",
    "BudgetError",
    "Budgets",
    "Check",
    "duration_buckets",
    "grafana_dashboard",
    "le_label",
    "load_budgets",
    "prometheus_rules",
    "to_yaml",
]
