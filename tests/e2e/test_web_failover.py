"""Web servers are cattle: kill one, and a logged-in user carries on through another."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest
from e2e_harness import Client, init_distributed, start_web

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_a_user_stays_logged_in_when_one_of_two_web_processes_dies(tmp_path: Path) -> None:
    env = init_distributed(tmp_path)
    first = start_web(tmp_path, env, "web-a", workers=1)
    second = start_web(tmp_path, env, "web-b", workers=1)
    try:
        name = f"failover_{uuid.uuid4().hex[:12]}"
        through_first = Client(first.base_url)
        assert through_first.sign_up(name).status == 201
        assert through_first.log_in(name).status == 200
        assert through_first.get("/api/me").status == 200

        for process in first.processes:
            process.send_signal(signal.SIGKILL)
            process.wait(10)

        through_second = Client(second.base_url)
        through_second.cookies = dict(through_first.cookies)
        through_second.csrf = through_first.csrf
        me = through_second.get("/api/me")
        assert me.status == 200, me
        assert me.json()["username"] == name
        # The session's CSRF token lives in the shared session too: writes work.
        assert through_second.request("DELETE", "/api/session").status == 204
        assert through_second.get("/api/me").status == 401
    finally:
        first.stop()
        assert second.stop() == [0], second.output()
