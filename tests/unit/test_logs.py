"""Log lines: text or JSON, a request id on every line of a request, no colour codes in a
file, and the id carried from a web request through the bus into the worker's lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_web_support import Web, png_bytes

from entrypoints.logs import configure_logging
from entrypoints.photofeed.config import load_settings
from scalecore import requestid
from scalecore.errors import ConfigError


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo what configure_logging does to the root logger and the quieted loggers."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quieted = {name: logging.getLogger(name).level for name in ("pika", "werkzeug")}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, old in quieted.items():
        logging.getLogger(name).setLevel(old)


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_the_request_id_and_no_colour() -> None:
    out = io.StringIO()
    configure_logging({"format": "json", "level": "info"}, stream=out)
    log = logging.getLogger("scalecore.test")
    with requestid.bind("req-aaaaaaaa"):
        log.info("status %s", "\x1b[32m200\x1b[0m", extra={"status": 200})
    log.info("outside")
    logging.getLogger("pika.connection").info("pika chatter")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["status 200", "outside", "failed"]
    first = lines[0]
    assert first["request_id"] == "req-aaaaaaaa"
    assert (first["level"], first["logger"], first["status"]) == ("INFO", "scalecore.test", 200)
    assert {"time", "pid"} <= set(first)
    assert lines[1]["request_id"] is None
    assert "ValueError: boom" in lines[2]["exc_info"]
    assert "\x1b" not in out.getvalue()
    assert "\\u001b" not in out.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_text_lines_keep_colour_only_on_a_terminal() -> None:
    to_file, to_terminal = io.StringIO(), _Tty()
    log = logging.getLogger("scalecore.test")
    configure_logging({"format": "text"}, stream=to_file)
    with requestid.bind("req-bbbbbbbb"):
        log.warning("\x1b[1mbold\x1b[0m")
    configure_logging({"format": "text"}, stream=to_terminal)  # replaces the first handler
    log.warning("\x1b[1mbold\x1b[0m")
    assert to_file.getvalue().endswith(" WARNING scalecore.test [req-bbbbbbbb]: bold\n")
    assert to_terminal.getvalue().endswith(" WARNING scalecore.test [-]: \x1b[1mbold\x1b[0m\n")
    assert to_file.getvalue().count("\n") == 1


def test_the_logging_section_is_validated(tmp_path: Path) -> None:
    config = tmp_path / "scalecore.toml"
    assert load_settings(None).logging == {"format": "text", "level": "info"}
    for body, key in (
        ('[logging]\nformat = "xml"\n', "logging.format"),
        ('[logging]\nlevel = "loud"\n', "logging.level"),
        ("[logging]\ncolour = true\n", "logging.colour"),
    ):
        config.write_text(body)
        with pytest.raises(ConfigError) as info:
            load_settings(str(config))
        assert key in str(info.value)


@pytest.mark.usefixtures("restore_logging")
def test_a_request_id_reaches_the_response_the_access_line_and_the_fan_out(
    tmp_path: Path,
) -> None:
    web = Web(tmp_path)
    out = io.StringIO()
    configure_logging({"format": "json"}, stream=out)
    owner, owner_token = web.user("ada")
    follower, follower_token = web.user("bob")
    follower.put("/api/following/ada", headers={"X-CSRF-Token": follower_token})
    out.seek(0)
    out.truncate(0)

    response = owner.post(
        "/api/photos",
        data={"photo": (io.BytesIO(png_bytes(32, 32)), "p.png"), "caption": ""},
        headers={"X-CSRF-Token": owner_token, "X-Request-ID": "upload-12345678"},
    )
    assert response.status_code == 201
    assert response.headers["X-Request-ID"] == "upload-12345678"
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    [access] = [line for line in lines if line["logger"] == "scalecore.access"]
    assert access["request_id"] == "upload-12345678"
    assert (access["method"], access["path"], access["status"]) == ("POST", "/api/photos", 201)
    # The sync bus fanned the upload out inside the request: the worker's line has its id.
    [fanned] = [line for line in lines if line["logger"] == "scalecore.photofeed.workers"]
    assert fanned["request_id"] == "upload-12345678"
    assert requestid.current() is None


@pytest.mark.parametrize(
    "sent",
    [None, "", "short", "has space 12345", "x" * 129, 'quote"12345678', "naïve-12345678"],
)
def test_a_missing_or_malformed_request_id_is_replaced(tmp_path: Path, sent: str | None) -> None:
    web = Web(tmp_path)
    headers = {"X-Request-ID": sent} if sent is not None else {}
    answered = web.client().get("/healthz", headers=headers).headers["X-Request-ID"]
    assert answered != sent
    assert requestid.parse(answered) == answered
    again = web.client().get("/healthz").headers["X-Request-ID"]
    assert again != answered
