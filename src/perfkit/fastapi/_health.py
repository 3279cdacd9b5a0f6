"""
:func:`health_routes`: ``/healthz`` (liveness) and ``/readyz`` (readiness) on a FastAPI app.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from perfkit.http._health import DEFAULT_PROBE_TIMEOUT, Probe, Readiness

__all__ = ["health_routes"]

_RETRY_AFTER: Final = "5"
_READY_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"enum": ["ready", "degraded", "unavailable"]},
        "checks": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["status", "ms"],
                "properties": {
                    "status": {"enum": ["ok", "down"]},
                    "ms": {"type": "number"},
                    "error": {"type": "string", "description": "The failure's class only"},
                },
            },
        },
    },
}


def health_routes(
    app: FastAPI,
    probes: Sequence[Probe],
    *,
    live: str = "/healthz",
    ready: str = "/readyz",
    timeout: float = DEFAULT_PROBE_TIMEOUT,
) -> Readiness:
    """
    Add a liveness and a readiness route to *app*.

    ``GET`` *live* answers ``{"status": "ok"}`` while the process serves
    requests, whatever its dependencies do: point a restart policy at it.
    ``GET`` *ready* runs every probe concurrently, each within *timeout*, and
    answers 200 ``ready`` (or ``degraded`` when only non-critical probes
    fail) or 503 ``unavailable`` with ``Retry-After`` while a critical one is
    down: point a load balancer at it. Neither is worth caching or timing:
    exclude both from :class:`~perfkit.TimingMiddleware` if you like.

    Args:
        app: The application.
        probes: What readiness checks
            (:func:`~perfkit.http.database_probe`, :func:`~perfkit.http.cache_probe`,
            or a :class:`~perfkit.http.Probe` of your own).
        live: The liveness path.
        ready: The readiness path.
        timeout: Seconds each probe may take.

    Example::

        health_routes(app, [database_probe(engine), cache_probe(cache)])

    .. versionadded:: 0.2.0
    """
    readiness = Readiness(probes, timeout=timeout)

    @app.get(live, tags=["operations"], summary="Liveness: the process serves requests")
    async def liveness() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        ready,
        tags=["operations"],
        summary="Readiness: every critical dependency answers",
        responses={
            200: {"content": {"application/json": {"schema": _READY_SCHEMA}}},
            503: {
                "description": "A critical dependency is down",
                "content": {"application/json": {"schema": _READY_SCHEMA}},
            },
        },
        response_class=JSONResponse,
    )
    async def readiness_route() -> JSONResponse:
        status, body = await readiness.report()
        headers = {"Retry-After": _RETRY_AFTER} if status == 503 else None
        return JSONResponse(body, status_code=status, headers=headers)

    return readiness
