"""Log lines of every scalecore process: plain text or JSON lines, each with its request id.

``[logging]`` in the config chooses::

    [logging]
    format = "text"   # or "json": one JSON object per line, for a log shipper
    level = "info"    # debug, info, warning, error

Every line carries the id of the request it belongs to (``request_id``; ``-`` in text,
``null`` in JSON, outside any request), taken from :mod:`scalecore.requestid`: the web
request's id in a web process, the id the bus message carried in a worker. Text lines are
``TIME LEVEL LOGGER [REQUEST_ID]: MESSAGE``; JSON lines hold ``time`` (ISO 8601, UTC),
``level``, ``logger``, ``message``, ``request_id``, ``pid`` and any ``extra`` fields (the
access log adds ``method``, ``path``, ``status``, ``duration_ms``), and ``exc_info`` when
there is a traceback.

ANSI colour codes (some libraries colour their lines) are removed unless the line goes to
a terminal; JSON lines never hold any. pika's INFO lines (one per connection event) and
the built-in request lines of the development server are turned down to warnings:
scalecore writes its own access line per request, with the request id.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import IO, Any, Final

from pythonjsonlogger.json import JsonFormatter

from entrypoints.config import LOG_FORMATS, LOG_LEVELS, LOGGING_DEFAULTS
from scalecore import requestid
from scalecore.errors import ConfigError

__all__ = ["RequestIdFilter", "configure_logging", "make_formatter"]

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
#: Loggers too chatty at INFO for a production log.
_QUIETED: Final = ("pika", "werkzeug")
_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
_ANSI: Final = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: Marks the handler this module installed, so configuring again replaces it.
_OURS: Final = "_scalecore_handler"


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id`` to the current request id (``None`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = requestid.current()
        return True


class _TextFormatter(logging.Formatter):
    def __init__(self, *, strip_ansi: bool) -> None:
        super().__init__(_TEXT_FORMAT)
        self.strip_ansi = strip_ansi

    def format(self, record: logging.LogRecord) -> str:
        shown = record.__dict__.get("request_id")
        record.request_id = shown or "-"
        try:
            line = super().format(record)
        finally:
            record.request_id = shown
        return _ANSI.sub("", line) if self.strip_ansi else line


class _JsonLinesFormatter(JsonFormatter):
    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s %(request_id)s %(process)d",
            rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
            timestamp="time",
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {
            key: _ANSI.sub("", value) if isinstance(value, str) else value
            for key, value in log_data.items()
        }


def make_formatter(log_format: str, stream: IO[str] | None = None) -> logging.Formatter:
    """The formatter of ``log_format`` ("text" or "json") for lines written to ``stream``."""
    if log_format == "json":
        return _JsonLinesFormatter()
    isatty = getattr(stream, "isatty", None)
    return _TextFormatter(strip_ansi=not (callable(isatty) and isatty()))


def configure_logging(
    section: Mapping[str, Any] | None = None, *, stream: IO[str] | None = None
) -> logging.Handler:
    """Send every log line of this process to ``stream`` (stderr) as ``section`` says.

    Idempotent: calling it again (a forked worker, a reloaded config) replaces the handler
    it installed before and leaves other handlers alone. Returns the handler.
    """
    options = {**LOGGING_DEFAULTS, **(section or {})}
    if options["format"] not in LOG_FORMATS or options["level"] not in LOG_LEVELS:
        raise ConfigError(f"bad [logging] options: {options!r}", key="logging")
    target = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(target)
    handler.setFormatter(make_formatter(options["format"], target))
    handler.addFilter(RequestIdFilter())
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[options["level"]])
    for name in _QUIETED:
        logging.getLogger(name).setLevel(max(logging.WARNING, _LEVELS[options["level"]]))
    return handler
