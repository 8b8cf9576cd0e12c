"""Helpers for the web tests: an app over in-memory adapters, a logged-in client, images.

Not tests themselves; the ``test_web_*`` modules import from here. The app runs on the
real container, with config choosing the in-process adapters (memory repositories, a
synchronous bus, memory sessions and ledger, a cheap password hash), and the feed worker
attached, so an upload reaches followers' feeds before the response returns.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from dependency_injector import providers
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from entrypoints.container import Container, create_container
from entrypoints.photofeed.config import load_settings
from entrypoints.web import create_app
from scalecore.clock import ManualClock

BASE_CONFIG = """
[bus]
mode = "sync"

[ledger]
backend = "memory"

[photofeed]
repositories = "memory"
max_upload_bytes = 200000

[photofeed.password_hasher]
time_cost = 1
memory_cost = 8
parallelism = 1
"""


def png_bytes(width: int = 64, height: int = 48, color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


class Web:
    """An app, its container, and helpers to drive it as a user would."""

    def __init__(
        self,
        tmp_path: Path,
        extra: str = "",
        *,
        blobs: str = "memory",
        clock: ManualClock | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        config = tmp_path / "scalecore.toml"
        blob_table = f'[blobs]\nbackend = "{blobs}"\n'
        # Memory sessions (the embedded default is SQLite), unless ``extra`` sets them.
        session_table = "" if "[sessions]" in extra else '[sessions]\nbackend = "memory"\n'
        config.write_text(
            f'[deployment]\ndata_dir = "{tmp_path / "data"}"\n{blob_table}{session_table}'
            f"{BASE_CONFIG}{extra}"
        )
        self.settings = load_settings(config, environ={})
        self.container: Container = create_container(self.settings)
        self.clock = clock
        if clock is not None:
            self.container.clock.override(providers.Object(clock))
        for name, value in (overrides or {}).items():
            getattr(self.container, name).override(providers.Object(value))
        self.app: Flask = create_app(self.container)
        bus = self.container.bus()
        self.container.feed_worker().attach(bus)
        bus.start()
        self.service = self.container.photofeed()

    def client(self) -> FlaskClient:
        return self.app.test_client()

    def user(self, username: str, password: str = "password123") -> tuple[FlaskClient, str]:
        """Sign ``username`` up, log in with a fresh client; return it and its CSRF token."""
        client = self.client()
        response = client.post("/api/users", json={"username": username, "password": password})
        assert response.status_code == 201, response.json
        response = client.post("/api/session", json={"username": username, "password": password})
        assert response.status_code == 200, response.json
        return client, response.json["csrf_token"]

    @staticmethod
    def upload(
        client: FlaskClient, token: str, data: bytes | None = None, caption: str = "", **extra: Any
    ) -> Any:
        image = png_bytes() if data is None else data
        return client.post(
            "/api/photos",
            data={"photo": (io.BytesIO(image), "photo.png"), "caption": caption},
            headers={"X-CSRF-Token": token},
            **extra,
        )


def session_cookie(client: FlaskClient) -> str | None:
    cookie = client.get_cookie("sc_session")
    return cookie.value if cookie is not None else None
