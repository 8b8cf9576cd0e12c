"""Liveness and readiness.

``GET /healthz`` answers 200 while the process can serve at all; it touches no backend, so
a load balancer never kills a healthy web process because a database blinked.

``GET /readyz`` pings every backend this process uses (each port adapter and the databases)
and answers 200 when all answer, or 503 naming each one that did not, so a load balancer
stops sending traffic to a process that cannot serve it. It answers within about 2 s even
when a backend hangs (see :mod:`entrypoints.readiness`).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from entrypoints.web.state import state

__all__ = ["health"]

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Response:
    response = jsonify({"status": "ok"})
    response.headers["Cache-Control"] = "no-store"
    return response


@health.get("/readyz")
def readyz() -> Response:
    checks: dict[str, str] = {}
    failing: list[str] = []
    for name, error in state().readiness.run().items():
        if error is None:
            checks[name] = "ok"
        else:
            checks[name] = f"unavailable: {error}"
            failing.append(f"{name} ({error})")
    if failing:
        body = {
            "status": "unavailable",
            "checks": checks,
            "error": {
                "code": "backend_unavailable",
                "message": "not ready: " + "; ".join(failing),
            },
        }
        response = jsonify(body)
        response.status_code = 503
    else:
        response = jsonify({"status": "ok", "checks": checks})
    response.headers["Cache-Control"] = "no-store"
    return response
