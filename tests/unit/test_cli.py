"""The ``scalecore`` command: one-line errors, config, check, db init, bus replay, runners."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from entrypoints.cli import main

MEMORY = """
[photofeed]
repositories = "memory"
"""


def config_file(tmp_path: Path, text: str = MEMORY) -> Path:
    path = tmp_path / "scalecore.toml"
    path.write_text(f'[deployment]\ndata_dir = "{tmp_path / "data"}"\n{text}')
    return path


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    clean = {k: None for k in os.environ if k.startswith("SCALECORE_")}
    return CliRunner().invoke(main, list(args), env={**clean, **(env or {})})


def assert_one_line_error(result: Result, fragment: str, code: int = 2) -> None:
    assert result.exit_code == code, (result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    assert fragment in lines[0], lines
    assert "Traceback" not in result.output + result.stderr
    assert result.stdout == ""


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("run", "--port", "abc"), "'abc' is not a valid integer"),
        (("run", "--port", "70000"), "70000 is not in the range"),
        (("run", "--nope"), "No such option '--nope'"),
        (("frobnicate",), "No such command 'frobnicate'"),
        (("web", "--workers", "0"), "0 is not in the range x>=1"),
        (("web", "--bind", "nonsense"), "must look like HOST:PORT"),
        (("bus", "replay"), "Missing argument 'TOPIC'"),
        (("bus", "replay", "Bad Topic!"), "topic name must be dotted lowercase"),
        (("bus", "replay", "no.such.topic"), "no consumer group on topic 'no.such.topic'"),
        (("config", "show", "--config", "/does/not/exist.toml"), "config file not found"),
    ],
)
def test_bad_arguments_are_one_line_errors(args: tuple[str, ...], fragment: str) -> None:
    assert_one_line_error(invoke(*args), fragment)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[web\n", "is not valid TOML"),
        ("[web]\nsecure_cookie = true\n", "web.secure_cookie: unknown key; "),
        ("[web]\nworkers = 0\n", "web.workers: must be at least 1"),
        ("[web]\nmedia_redirect = 'yes'\n", "web.media_redirect: must be a boolean"),
        ("[web]\nbind = 'localhost'\n", "web.bind: must look like HOST:PORT"),
        ("[photofeed]\nmax_upload = 3\n", "photofeed.max_upload: unknown key; "),
        ("[photofeed]\nmax_upload_bytes = 0\n", "photofeed.max_upload_bytes: must be an integer"),
        ("[photofeed]\nrepositories = 'nosql'\n", "photofeed.repositories: must be one of"),
        ("[photofeed.password_hasher]\nrounds = 3\n", "photofeed.password_hasher.rounds"),
        ("[photofeed]\nfeed_default_limit = 60\n", "photofeed.feed_default_limit"),
        ("[cache]\nbackend = 'memroy'\n", "did you mean 'memory'?"),
        ("[webb]\n", "unknown section [webb]"),
        (
            "[database.stores.outbox]\nshards = ['sqlite:///o.db']\n",
            "database.stores.outbox: unknown logical store",
        ),
    ],
)
def test_bad_config_is_a_one_line_error(tmp_path: Path, text: str, fragment: str) -> None:
    path = config_file(tmp_path, text)
    for command in (
        ("config", "show"),
        ("check",),
        ("db", "init"),
        ("bus", "replay", "photo.uploaded"),
    ):
        assert_one_line_error(invoke(*command, "--config", str(path)), fragment)


def test_bad_config_in_a_real_process_is_one_line(tmp_path: Path) -> None:
    path = config_file(tmp_path, "[web]\nworkers = 'many'\n")
    for command in (["run"], ["web"], ["worker"], ["scheduler"]):
        process = subprocess.run(
            [sys.executable, "-m", "entrypoints.cli", *command, "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert process.returncode == 2, process.stderr
        assert process.stderr.strip() == "error: web.workers: must be an integer, got 'many'"
        assert "Traceback" not in process.stderr


def test_an_unusable_data_dir_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the data folder should be")
    path = tmp_path / "c.toml"
    path.write_text(f'[deployment]\ndata_dir = "{blocker}/data"\n')
    result = invoke("db", "init", "--config", str(path))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        process = subprocess.run(
            [
                sys.executable,
                "-m",
                "entrypoints.cli",
                "run",
                "--config",
                str(config_file(tmp_path)),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert process.returncode == 2, process.stderr
    assert process.stderr.strip().startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in process.stderr


# --------------------------------------------------------------------------- operations


def test_config_show_reads_scalecore_config_and_masks_secrets(tmp_path: Path) -> None:
    path = config_file(tmp_path, MEMORY + '[blobs]\nurl_secret = "0123456789abcdef0123"\n')
    result = invoke("config", "show", env={"SCALECORE_CONFIG": str(path)})
    assert result.exit_code == 0, result.stderr
    assert f"# source: {path}" in result.stdout
    assert 'url_secret = "***"' in result.stdout
    assert "#   SCALECORE_BLOBS__URL_SECRET" in result.stdout
    assert "0123456789abcdef0123" not in result.stdout
    assert "media_redirect = false" in result.stdout
    assert 'repositories = "memory"' in result.stdout


def show(path: Path | None, env: dict[str, str] | None = None) -> str:
    args = ("config", "show") if path is None else ("config", "show", "--config", str(path))
    result = invoke(*args, env=env)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def body(shown: str) -> str:
    return "\n".join(line for line in shown.splitlines() if not line.startswith("#"))


@pytest.mark.parametrize("source", ["embedded", "distributed"])
def test_config_show_prints_toml_that_loads_back_as_the_same_config(
    tmp_path: Path, source: str
) -> None:
    import tomllib

    from entrypoints.container import effective_config
    from entrypoints.photofeed.config import load_settings

    distributed = Path(__file__).resolve().parents[2] / "deploy" / "distributed.toml"
    original = None if source == "embedded" else distributed
    shown = show(original)
    saved = tmp_path / "saved.toml"
    saved.write_text(shown)
    data = tomllib.loads(shown)
    # Every default is there, the service's included.
    assert data["photofeed"]["feed_max_limit"] == 50
    assert data["photofeed"]["password_hasher"]["time_cost"] == 3
    assert data["photofeed"]["images"]["formats"] == ["JPEG", "PNG", "GIF", "WEBP"]
    assert data["cache"]["backend"] in ("memory", "twotier")
    secrets_env: dict[str, str] = {}
    if source == "distributed":
        # A masked secret does not load: the file says where the real one goes ...
        refused = invoke("config", "show", "--config", str(saved))
        assert_one_line_error(refused, "masked by `scalecore config show`")
        # ... and the environment brings it back.
        secrets_env = {
            "SCALECORE_BLOBS__ACCESS_KEY_ID": "testing",
            "SCALECORE_BLOBS__SECRET_ACCESS_KEY": "testing",
            "SCALECORE_BUS__URL": "amqp://guest:guest@127.0.0.1:5672/%2F",
        }
        for name in secrets_env:
            assert f"#   {name}" in shown
    assert body(show(saved, secrets_env)) == body(shown)
    reloaded = effective_config(load_settings(saved, environ=secrets_env))
    assert reloaded == effective_config(load_settings(original, environ={}))


def test_check_reports_every_backend(tmp_path: Path) -> None:
    result = invoke("check", "--config", str(config_file(tmp_path)))
    assert result.exit_code == 0, (result.stdout, result.stderr)
    for name in (
        "blobs (localfs)",
        "sessions (sql)",
        "bus (inprocess)",
        "cache (memory)",
        "ledger (sql)",
        "photofeed.users",
        "photofeed.feed",
    ):
        assert f"ok    {name}" in result.stdout


def test_check_fails_for_an_unreachable_backend(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a folder should be")
    path = config_file(tmp_path, MEMORY + f'[ledger]\nurl = "sqlite:///{blocker}/ledger.db"\n')
    result = invoke("check", "--config", str(path))
    assert result.exit_code == 1
    assert "FAIL  ledger (sql)" in result.stdout
    assert "ok    cache (memory)" in result.stdout
    assert "1 problem(s) found" in result.stderr


def test_check_reports_a_backend_that_never_answers_within_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A peer that accepts the connection and then says nothing, as a frozen broker does.
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        bus = f'[bus]\nbackend = "rabbitmq"\nurl = "amqp://guest:guest@127.0.0.1:{port}/%2F"\n'
        path = config_file(tmp_path, MEMORY + bus)
        monkeypatch.setattr("entrypoints.cli.CHECK_TIMEOUT", 0.5)
        began = time.monotonic()
        result = invoke("check", "--config", str(path))
        assert time.monotonic() - began < 5
    finally:
        silent.close()
    assert result.exit_code == 1
    assert "FAIL  bus (rabbitmq): no answer within 0.5 s" in result.stdout
    assert "ok    cache (memory)" in result.stdout


def test_check_flags_puppies_in_a_multi_node_deployment(tmp_path: Path) -> None:
    path = config_file(tmp_path, MEMORY)
    result = invoke(
        "check", "--config", str(path), env={"SCALECORE_DEPLOYMENT__MULTI_NODE": "true"}
    )
    assert result.exit_code == 1
    assert "FAIL  multi-node: photofeed.repositories = 'memory'" in result.stdout
    assert "FAIL  multi-node: sessions.url is a SQLite file" in result.stdout


def test_db_init_creates_tables_idempotently(tmp_path: Path) -> None:
    path = config_file(tmp_path)  # sessions: SQLite under data_dir by default
    for _ in range(2):
        result = invoke("db", "init", "--config", str(path))
        assert result.exit_code == 0, result.stderr
        assert "created tables for sessions" in result.stdout
        assert "created tables for ledger" in result.stdout
    assert (tmp_path / "data" / "sessions.db").exists()


def test_bus_replay_defaults_to_the_service_groups(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    result = invoke("bus", "replay", "photo.uploaded", "--config", str(path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "replayed 0 message(s) of photo.uploaded for group feed-fanout\n"
    assert "keeps dead letters inside the process" in result.stderr
    named = invoke("bus", "replay", "photo.deleted", "--group", "other", "--config", str(path))
    assert named.stdout == "replayed 0 message(s) of photo.deleted for group other\n"


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(port: int, process: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                connection.close()
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the server did not come up")


def _stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    return process.returncode, out


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALECORE_")}
    return subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


@pytest.mark.parametrize("command", ["worker", "scheduler"])
def test_worker_and_scheduler_stop_gracefully_on_sigterm(tmp_path: Path, command: str) -> None:
    port = _free_port()
    process = _spawn(
        command, "--config", str(config_file(tmp_path)), "--metrics-bind", f"127.0.0.1:{port}"
    )
    assert process.stdout is not None
    try:
        first = process.stdout.readline()
        # Run apart on an in-process bus, its events reach no other process: it says so.
        assert first.startswith("warning: bus backend 'inprocess' is not shared"), first
        assert process.stdout.readline() == f"metrics: http://127.0.0.1:{port}/metrics\n"
        assert process.stdout.readline().startswith(f"scalecore {command}:")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        text = response.read().decode()
        assert "# TYPE scalecore_bus_handled_total counter" in text
        assert "# TYPE scalecore_cache_requests_total counter" in text
        connection.request("GET", "/readyz")
        assert connection.getresponse().status == 200
        connection.request("GET", "/api/me")  # the site itself is not served here
        assert connection.getresponse().status == 404
        connection.close()
    finally:
        code, out = _stop(process)
    assert code == 0, out
    assert f"scalecore {command}: stopped" in out
    assert "Traceback" not in out


def test_web_runs_gunicorn_workers_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    process = _spawn(
        "web",
        "--config",
        str(config_file(tmp_path)),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "--threads",
        "2",
    )
    try:
        _wait_for(port, process)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/readyz")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        code, out = _stop(process)
    assert code == 0, out
    assert "warning: sessions backend" not in out  # SQLite under data_dir: one file, shared
    assert "warning: cache backend 'memory' is not shared between the 2 workers" in out
    assert out.count("Booting worker with pid") == 2, out
    assert "Traceback" not in out


@pytest.mark.parametrize("server", ["waitress", "werkzeug"])
def test_run_serves_everything_and_stops_on_sigterm(tmp_path: Path, server: str) -> None:
    port = _free_port()
    process = _spawn(
        "run", "--config", str(config_file(tmp_path)), "--port", str(port), "--server", server
    )
    try:
        _wait_for(port, process)
    finally:
        code, out = _stop(process)
    assert code == 0, out
    assert f"serving http://127.0.0.1:{port} on {server}" in out
    assert "scalecore: stopped" in out
    assert "Traceback" not in out
