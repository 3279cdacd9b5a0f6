"""
A stand-in bill-text service for the demo: ``python -m bill_api.text_service``.

``GET /bills/{id}/text`` answers generated text. ``POST /control`` with
``{"mode": "ok" | "fail" | "slow"}`` makes it fail (503) or answer after 1 s,
to watch the API's circuit breaker at work.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException

__all__ = ["create_text_app"]


def create_text_app() -> FastAPI:
    """The stand-in service."""
    app = FastAPI(title="bill text (stand-in)")
    state = {"mode": "ok"}

    @app.get("/bills/{bill_id}/text")
    async def text(bill_id: int) -> dict[str, Any]:
        if state["mode"] == "fail":
            raise HTTPException(503, "text service unavailable")
        if state["mode"] == "slow":
            await asyncio.sleep(1.0)
        return {"text": f"Be it enacted by the legislature: bill {bill_id} in full."}

    @app.post("/control")
    async def control(body: dict[str, str]) -> dict[str, str]:
        mode = body.get("mode", "ok")
        if mode not in ("ok", "fail", "slow"):
            raise HTTPException(422, "mode must be ok, fail or slow")
        state["mode"] = mode
        return state

    return app


if __name__ == "__main__":
    uvicorn.run(create_text_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8001")))
