"""Scenarios for the perfkit-load CLI tests."""

from __future__ import annotations

from perfkit.load import Request, Scenario, Step

hello = Scenario([Step(1, lambda i, rng: Request("GET /hello", "GET", "/hello"))])
