"""The runtime directory of one `scalecore web`: private, fresh, and removed by its owner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from entrypoints.webruntime import MULTIPROC_ENV, WebRuntime


def test_each_instance_gets_a_fresh_private_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    first = WebRuntime.create()
    assert os.environ[MULTIPROC_ENV] == str(first.metrics_dir)
    second = WebRuntime.create()
    try:
        assert first.root.parent == second.root.parent == tmp_path
        assert first.root != second.root
        assert first.control_socket != second.control_socket
        assert list(second.metrics_dir.iterdir()) == []
        assert oct(first.metrics_dir.stat().st_mode & 0o777) == "0o700"
    finally:
        second.remove()
        first.remove()
    assert not first.root.exists()
    assert not second.root.exists()
    assert MULTIPROC_ENV not in os.environ


def test_a_forked_worker_leaving_does_not_remove_the_directory(tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "from entrypoints.webruntime import WebRuntime\n"
        "runtime = WebRuntime.create()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    runtime.remove()\n"  # a worker exits through the master's finally
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print(runtime.root.is_dir())\n"
        "runtime.remove()\n"
        "print(runtime.root.exists())\n"
    )
    env = {**os.environ, "RUNTIME_DIRECTORY": str(tmp_path)}
    env.pop(MULTIPROC_ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False"]


def test_the_multiprocess_mode_is_chosen_even_if_the_library_was_imported_first(
    tmp_path: Path,
) -> None:
    code = (
        "import prometheus_client.values as values\n"
        "from entrypoints.webruntime import WebRuntime\n"
        "before = values.ValueClass.__name__\n"
        "runtime = WebRuntime.create()\n"
        "print(before, values.ValueClass.__name__)\n"
        "runtime.remove()\n"
    )
    env = {**os.environ, "RUNTIME_DIRECTORY": str(tmp_path)}
    env.pop(MULTIPROC_ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["MutexValue", "MmapedValue"]
