"""Progress of a long migration: a bar per store on a terminal, plain lines otherwise.

``Progress("bar")`` draws a click progress bar on stderr with the rate (rows/s or MB/s)
and the ETA; ``Progress("lines")`` prints one line every :data:`LINE_INTERVAL` seconds
(for logs and CI); ``Progress("quiet")`` prints nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import click

__all__ = ["LINE_INTERVAL", "Progress", "Task"]

#: Seconds between two plain progress lines of one task.
LINE_INTERVAL = 5.0


class Task:
    """Progress of one store: call :meth:`advance` as work is done; use as a context."""

    def __init__(
        self, mode: str, label: str, total: int | None, unit: str, echo: Callable[[str], None]
    ) -> None:
        self._mode = mode
        self._label = label
        self._total = total if total else None
        self._unit = unit
        self._echo = echo
        self._done = 0
        self._began = time.monotonic()
        self._last_line = self._began
        self._bar: Any = None
        if mode == "bar":
            self._bar = click.progressbar(
                length=self._total,
                label=f"{label:<10}",
                file=sys.stderr,
                show_eta=True,
                show_pos=unit != "B",
                show_percent=True,
                item_show_func=lambda item: item,
            )
            self._bar.__enter__()

    def _rate(self) -> str:
        elapsed = time.monotonic() - self._began
        if elapsed <= 0:
            return ""
        per_second = self._done / elapsed
        if self._unit == "B":
            return f"{per_second / 1e6:,.1f} MB/s"
        return f"{per_second:,.0f} {self._unit}/s"

    def advance(self, count: int) -> None:
        """Record ``count`` more units (rows, objects or bytes) done."""
        self._done += count
        if self._bar is not None:
            self._bar.update(count, self._rate())
        elif self._mode == "lines":
            now = time.monotonic()
            if now - self._last_line >= LINE_INTERVAL:
                self._last_line = now
                self._echo(self._line())

    def _line(self) -> str:
        if self._unit == "B":
            done = f"{self._done / 1e6:,.1f} MB"
            total = f" of {self._total / 1e6:,.1f} MB" if self._total else ""
        else:
            done = f"{self._done:,} {self._unit}"
            total = f" of {self._total:,}" if self._total else ""
        eta = ""
        elapsed = time.monotonic() - self._began
        if self._total and self._done and elapsed > 0:
            left = max(0.0, (self._total - self._done) * elapsed / self._done)
            eta = f", about {left:,.0f} s left"
        return f"{self._label}: {done}{total}, {self._rate()}{eta}"

    def __enter__(self) -> Task:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
        elif self._mode == "lines" and exc_type is None:
            self._echo(self._line() + " (done)")


class Progress:
    """Makes :class:`Task` objects of one mode: ``bar``, ``lines`` or ``quiet``."""

    def __init__(self, mode: str, echo: Callable[[str], None]) -> None:
        if mode not in ("bar", "lines", "quiet"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.mode = mode
        self._echo = echo

    @classmethod
    def choose(cls, quiet: bool, echo: Callable[[str], None]) -> Progress:
        """``quiet`` if asked, a bar when stderr is a terminal, else plain lines."""
        if quiet:
            return cls("quiet", echo)
        return cls("bar" if sys.stderr.isatty() else "lines", echo)

    def task(self, label: str, total: int | None, unit: str = "rows") -> Task:
        return Task(self.mode, label, total, unit, self._echo)

    def say(self, message: str) -> None:
        """A line worth showing unless quiet (a skipped store, a retry)."""
        if self.mode != "quiet":
            self._echo(message)
