"""The private runtime directory of one ``scalecore web`` (gunicorn master) instance.

Each ``scalecore web`` makes a fresh directory of its own, so two instances on one host
never share a file::

    <base>/scalecore-web-XXXXXXXX/
        metrics/        the workers' prometheus_client files (PROMETHEUS_MULTIPROC_DIR)
        gunicorn.ctl    gunicorn's control socket (for ``gunicornc``)

``<base>`` is ``$RUNTIME_DIRECTORY`` (systemd's ``RuntimeDirectory=``), else
``$XDG_RUNTIME_DIR``, else the system temp directory. The directory is new, hence empty,
at start (prometheus_client asks for a clean directory), and removed when the master
exits; a master killed with SIGKILL leaves it behind, harmlessly, under a unique name.

The multiprocess directory must be in the environment before prometheus_client is first
imported in a worker: :meth:`WebRuntime.create` sets it in the master, before the fork.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import attrs

__all__ = ["MULTIPROC_ENV", "WebRuntime"]

#: prometheus_client's variable naming the directory of the multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_log = logging.getLogger(__name__)


def _base_dir() -> str:
    for variable in ("RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"):
        # systemd may list several directories, separated by colons: take the first.
        value = os.environ.get(variable, "").split(":")[0]
        if value and Path(value).is_dir() and os.access(value, os.W_OK):
            return value
    return tempfile.gettempdir()


@attrs.frozen
class WebRuntime:
    """The runtime directory of one web instance, and the paths within it."""

    root: Path
    #: The process that made the directory: the only one that removes it.
    owner: int = attrs.field(factory=os.getpid)

    @property
    def metrics_dir(self) -> Path:
        return self.root / "metrics"

    @property
    def control_socket(self) -> Path:
        return self.root / "gunicorn.ctl"

    @classmethod
    def create(cls) -> WebRuntime:
        """Make a fresh directory and point this process's (and its future children's)
        ``PROMETHEUS_MULTIPROC_DIR`` at its ``metrics`` folder."""
        root = Path(tempfile.mkdtemp(prefix="scalecore-web-", dir=_base_dir()))
        runtime = cls(root)
        runtime.metrics_dir.mkdir(mode=0o700)
        os.environ[MULTIPROC_ENV] = str(runtime.metrics_dir)
        values = sys.modules.get("prometheus_client.values")
        if values is not None:
            # Imported before the variable was set (not by scalecore's own start-up): the
            # value class was chosen then, for one process. Choose again, as at import.
            values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]
        return runtime

    def child_exit(self, _server: Any, worker: Any) -> None:
        """gunicorn's ``child_exit`` hook: forget the live gauges of a worker that died."""
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(worker.pid, str(self.metrics_dir))

    def remove(self) -> None:
        """Delete the directory and unset the variable, in the process that made them
        (a forked worker leaves through the same ``finally``: it must not). Idempotent."""
        if os.getpid() != self.owner:
            return
        if os.environ.get(MULTIPROC_ENV) == str(self.metrics_dir):
            del os.environ[MULTIPROC_ENV]
        shutil.rmtree(self.root, ignore_errors=True)
