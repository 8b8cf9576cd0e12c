"""The served OpenAPI document and the app agree: schemathesis, with every check, against
``/api/openapi.json`` as a real HTTP server of the app serves it. Each call is made with a
fresh logged-in session and its CSRF token, so authenticated paths are exercised, not only
their 401s (and schemathesis checks that a call without them is refused).

Bounded: a few examples per operation and a deadline for the whole module, so the spec
and the app cannot drift apart unnoticed without the suite growing slow. The server (an
app on in-memory adapters, in a thread) starts when the module is collected: schemathesis
makes one test per operation of the document it loads.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance
from test_web_support import Web
from werkzeug.serving import make_server

#: Examples per operation, and the time the whole run may take.
MAX_EXAMPLES = 25
BUDGET_SECONDS = 60.0
OWNER = "schema_owner"
#: Query parameters that carry an opaque cursor.
_OPAQUE = {"after", "before"}

_web = Web(Path(tempfile.mkdtemp(prefix="scalecore-schema-")))
_web.user(OWNER)
_server = make_server("127.0.0.1", 0, _web.app, threaded=True)
threading.Thread(target=_server.serve_forever, daemon=True).start()
BASE_URL = f"http://127.0.0.1:{_server.server_port}"
schema = schemathesis.openapi.from_url(f"{BASE_URL}/api/openapi.json")
# The session cookie and CSRF token come from a real login, not from generated values.
schema.config.generation.update(with_security_parameters=False)
#: When the first case of this module ran (the budget counts from there, not from import).
_started: list[float] = []


@pytest.fixture(scope="module", autouse=True)
def _stop_server() -> Iterator[None]:
    yield
    _server.shutdown()
    _server.server_close()


@schema.auth(refresh_interval=None)
class FreshSession:
    """Every case logs in afresh (a case may have logged the last session out)."""

    def get(self, case: Any, context: Any) -> tuple[str, str]:
        client = _web.client()
        reply = client.post("/api/session", json={"username": OWNER, "password": "password123"})
        assert reply.status_code == 200, reply.json
        cookie = client.get_cookie("sc_session")
        assert cookie is not None
        return cookie.value, str(reply.json["csrf_token"])

    def set(self, case: Any, data: tuple[str, str], context: Any) -> None:
        session_id, token = data
        case.cookies = {**(case.cookies or {}), "sc_session": session_id}
        case.headers = {**(case.headers or {}), "X-CSRF-Token": token}


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_app_does_what_its_served_spec_says(case: Any) -> None:
    if not _started:
        _started.append(time.monotonic())
    if time.monotonic() - _started[0] > BUDGET_SECONDS:
        pytest.fail(f"the schema run took over {BUDGET_SECONDS:.0f}s: lower MAX_EXAMPLES")
    excluded = []
    # Now and then the user themself: (un)following oneself is a documented 400.
    if (
        case.operation.path == "/api/following/{username}"
        and case.path_parameters
        and len(str(case.path_parameters.get("username", ""))) % 3 == 0
    ):
        case.path_parameters["username"] = OWNER
        excluded.append(positive_data_acceptance)
    if case.operation.path == "/api/photos":
        # Whether bytes decode as an image (else 415) is beyond what a schema can say; and
        # in multipart every field is text, so a "non-string" caption (``{}``) is text too.
        excluded += [positive_data_acceptance, negative_data_rejection]
    if _OPAQUE & set(case.query or {}):
        # A cursor is opaque: a string of the right alphabet that no page handed out is
        # refused (400), which no schema can tell apart from one that was.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(base_url=BASE_URL, excluded_checks=excluded)
