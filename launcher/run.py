"""What ``make run`` executes (``python -m launcher.run``): the whole system on one machine.

1. Redis: if ``REDIS_URL`` is unset, an :class:`~launcher.redis_server.EmbeddedRedis`
   with its append-only file under ``$VAR_DIR/redis`` (so bookings survive a
   restart) on ``EMBEDDED_REDIS_PORT`` (default 6390, or a free port if that
   one is busy). If ``REDIS_URL`` is set it is used as is, and must answer.
2. Every Procfile process (web, worker, scheduler) via ``honcho``, with
   ``REDIS_URL`` and development defaults in their environment and the
   virtualenv's ``bin`` first on ``PATH`` (the Procfile says ``gunicorn`` and
   ``python``, and honcho activates nothing).
3. Once ``GET /healthz`` answers 200, a banner with the URLs and a curl that
   books a viewing.
4. On Ctrl-C / SIGTERM / SIGHUP: honcho is told to stop its processes, then
   Redis is stopped (last, so nothing loses its connection mid-job), exit 0.
   If honcho ends by itself, Redis is stopped and honcho's code is returned.

Environment read here (everything else passes through to the processes):
``PORT`` (web port, default 5000), ``REDIS_URL``, ``EMBEDDED_REDIS_PORT``,
``VAR_DIR`` (default ``var/`` in the repository root), and the defaults set
for the children if unset: ``SANDBOX_LEDGER``, ``APP_ENV``, ``PYTHONUNBUFFERED``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, TextIO
from urllib.parse import urlsplit, urlunsplit

from launcher.redis_server import EmbeddedRedis, free_port, redis_answers

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 5000
DEFAULT_EMBEDDED_REDIS_PORT = 6390
DEFAULT_READY_TIMEOUT = 60.0
# honcho itself SIGKILLs its processes 5 s after SIGTERM; this is the backstop for honcho.
HONCHO_STOP_TIMEOUT = 20.0
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Same grammar as honcho's own Procfile parser (honcho.environ.PROCFILE_LINE).
PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")

DEMO_BOOKING = (
    '{"call_id": "CA42", '
    '"slot": {"resource": "viewing-42", "start": "2026-12-01T15:00:00Z", "minutes": 30}, '
    '"customer": {"name": "Ada Lovelace", "phone": "+15005550006"}, '
    '"payment": {"amount": 4900, "currency": "usd", "payment_method": "pm_card_visa"}}'
)


class LaunchError(Exception):
    """A problem the user can fix (busy port, dead REDIS_URL, ...): printed without a traceback, exit 1."""


# --------------------------------------------------------------------------- output

_output_lock = threading.Lock()


def emit(text: str, stream: TextIO | None = None) -> None:
    """Write ``text`` to stdout (or ``stream``) and flush, best effort.

    Output must never break the shutdown: after Ctrl-C on ``make run | tee
    log`` the pipe is gone (EPIPE), after the terminal closes writes fail
    (EIO). The first such failure points the stream at /dev/null, so later
    writes and the interpreter's final flush succeed and the exit code stays ours.
    Only the main loop and the relay thread call this; signal handlers do not.
    """
    target = sys.stdout if stream is None else stream
    with _output_lock:
        try:
            target.write(text)
            target.flush()
        except BlockingIOError:
            pass  # a full non-blocking pipe: drop this line, not all later ones
        except (OSError, ValueError):
            _silence(target)


def _silence(stream: TextIO) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError):
        pass


def say(message: str) -> None:
    """Launcher output, prefixed so it stands out from honcho's interleaved process logs."""
    emit(f"launcher | {message}\n")


def complain(message: str) -> None:
    emit(f"launcher | ERROR: {message}\n", sys.stderr)


def relay(source: IO[bytes]) -> None:
    """Copy honcho's output to our stdout, line by line (relay thread).

    honcho does not write to our stdout directly: if that broke, honcho would
    die on EPIPE in the middle of stopping its processes and leave them
    running (they live in their own sessions). Reading its pipe ourselves, to
    the end whatever happens to stdout, means honcho never sees a broken pipe.
    """
    with source:
        for line in iter(source.readline, b""):
            emit(line.decode("utf-8", "replace"))


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Everything the launcher takes from the environment, read once and validated up front."""

    port: int
    port_explicit: bool
    var_dir: Path
    external_redis_url: str | None
    embedded_redis_port: int

    @property
    def redis_dir(self) -> Path:
        return self.var_dir / "redis"


def _int_from_env(environ: Mapping[str, str], name: str, default: int) -> tuple[int, bool]:
    """``(value, was_set)``; a malformed value is a LaunchError, not a traceback."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default, False
    try:
        value = int(raw)
    except ValueError:
        raise LaunchError(f"{name}={raw!r} is not a port number") from None
    if not 0 < value < 65536:
        raise LaunchError(f"{name}={value} is out of range (1-65535)")
    return value, True


def load_settings(environ: Mapping[str, str], repo_root: Path = REPO_ROOT) -> Settings:
    port, port_explicit = _int_from_env(environ, "PORT", DEFAULT_PORT)
    redis_port, _ = _int_from_env(environ, "EMBEDDED_REDIS_PORT", DEFAULT_EMBEDDED_REDIS_PORT)
    var_dir = Path(environ.get("VAR_DIR") or repo_root / "var").absolute()
    return Settings(
        port=port,
        port_explicit=port_explicit,
        var_dir=var_dir,
        external_redis_url=environ.get("REDIS_URL") or None,
        embedded_redis_port=redis_port,
    )


# --------------------------------------------------------------------------- ports


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on ``host:port``.

    SO_REUSEADDR, like the servers we start, so a port in TIME_WAIT from a
    previous run does not count as busy; a listening socket still does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def choose_port(wanted: int, *, name: str, host: str, must_be_exact: bool) -> int:
    """``wanted`` if free; otherwise a free port (said out loud), or a LaunchError if ``must_be_exact``."""
    if port_is_free(wanted, host):
        return wanted
    if must_be_exact:
        raise LaunchError(f"port {wanted} ({name}) is already in use; stop whatever uses it or set {name}")
    replacement = free_port()
    say(f"port {wanted} ({name}) is busy, using {replacement} instead")
    return replacement


# --------------------------------------------------------------------------- honcho


def procfile_process_names(procfile: Path) -> list[str]:
    """Process types in ``procfile``, ``web`` first.

    honcho gives the first process type it starts the base ``-p`` port and
    adds 100 for each next type, in the order they are named on its command
    line. Naming ``web`` first is what guarantees the web server gets exactly
    ``$PORT``, whatever order the Procfile lists them in.
    """
    try:
        text = procfile.read_text(encoding="utf-8")
    except OSError as exc:
        raise LaunchError(f"cannot read {procfile}: {exc}") from None
    names = [m.group(1) for m in map(PROCFILE_LINE.match, text.splitlines()) if m]
    if "web" not in names:
        raise LaunchError(f"{procfile} has no 'web' process")
    return ["web", *(name for name in names if name != "web")]


def honcho_command(procfile: Path, port: int, process_names: Sequence[str]) -> list[str]:
    """The honcho command line.

    ``-e os.devnull``: honcho would otherwise load ``.env`` and let it
    override the environment we set (a ``REDIS_URL`` or ``PORT`` in ``.env``
    would silently point the processes away from the Redis we started).
    """
    return [
        sys.executable, "-m", "honcho", "start",
        "-f", str(procfile),
        "-d", str(procfile.parent),
        "-e", os.devnull,
        "-p", str(port),
        *process_names,
    ]  # fmt: skip


def child_environment(base: Mapping[str, str], *, redis_url: str, port: int, var_dir: Path) -> dict[str, str]:
    """Environment for honcho and the Procfile processes."""
    env = dict(base)
    env["REDIS_URL"] = redis_url
    env["PORT"] = str(port)
    env.setdefault("SANDBOX_LEDGER", str(var_dir / "sandbox-ledger.sqlite3"))
    env.setdefault("APP_ENV", "development")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # The interpreter running us is the virtualenv's; its bin dir holds gunicorn,
    # python, rq... Not resolved: .venv/bin/python is a symlink out of the venv.
    venv_bin = str(Path(sys.executable).parent)
    path = env.get("PATH", os.defpath)
    if path.split(os.pathsep)[0] != venv_bin:
        env["PATH"] = venv_bin + os.pathsep + path
    return env


def stop_honcho(proc: subprocess.Popen[bytes], timeout: float = HONCHO_STOP_TIMEOUT) -> None:
    """SIGTERM honcho (it SIGTERMs, then SIGKILLs, each process group it started) and reap it."""
    if proc.poll() is not None:
        return
    say("stopping processes")
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        complain(f"honcho did not stop within {timeout:g}s; killing it")
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: pgid == pid
        except ProcessLookupError:
            pass
        proc.wait()


def exit_code(returncode: int) -> int:
    """A Popen returncode as a shell would report it (killed by signal N -> 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


# --------------------------------------------------------------------------- readiness


def health_ok(url: str, timeout: float = 1.0) -> bool:
    """True if GET ``url`` answers 200. Proxies are bypassed: this is always a local server."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        return False


class StopRequest:
    """Set by SIGINT/SIGTERM/SIGHUP; the main loop polls it and shuts down in order.

    A flag rather than an exception (like KeyboardInterrupt) so a signal
    cannot land between starting a process and recording it, which would
    leave that process running.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, signal._HANDLER] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def install(self) -> None:
        for signum in HANDLED_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        """Put the previous handlers back (matters when main() is called in-process, e.g. by a test)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # No output here: the main thread may be inside emit(), holding its lock.
        if self.signum is None:
            self.signum = signum


def wait_until_healthy(url: str, honcho: subprocess.Popen[bytes], stop: StopRequest, timeout: float) -> bool:
    """Poll ``url`` until it answers 200: True; False on a stop request, honcho exiting, or the deadline."""
    deadline = time.monotonic() + timeout
    while not stop.requested and honcho.poll() is None and time.monotonic() < deadline:
        if health_ok(url):
            return True
        time.sleep(0.25)
    return False


# --------------------------------------------------------------------------- banner


def display_redis_url(url: str) -> str:
    """``url`` with any password masked, fit to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def banner(port: int, redis_description: str, process_names: Sequence[str]) -> str:
    base = f"http://127.0.0.1:{port}"
    rule = "=" * 78
    return "\n".join(
        [
            rule,
            "Saga Relay is running.",
            f"  web:       {base}   (health: {base}/healthz)",
            f"  redis:     {redis_description}",
            f"  processes: {', '.join(process_names)}",
            "",
            "Book a viewing:",
            (
                f"  curl -i -X POST {base}/book -H 'Content-Type: application/json' "
                f"-H 'Idempotency-Key: demo-1' -d '{DEMO_BOOKING}'"
            ),
            "Then follow the saga:",
            f"  curl {base}/sagas/<id from the Location header>",
            "",
            "Ctrl-C stops everything.",
            rule,
        ]
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m launcher.run", description="Run Redis and every Procfile process, like `make run`."
    )
    parser.add_argument(
        "--procfile", type=Path, default=REPO_ROOT / "Procfile", help="Procfile to run (default: the repo's)"
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=DEFAULT_READY_TIMEOUT,
        help="seconds to wait for GET /healthz to answer 200 (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    procfile: Path = args.procfile.absolute()
    stop = StopRequest()
    stop.install()
    redis_server: EmbeddedRedis | None = None
    honcho: subprocess.Popen[bytes] | None = None
    relay_thread: threading.Thread | None = None
    try:
        settings = load_settings(os.environ)
        process_names = procfile_process_names(procfile)

        if settings.external_redis_url is None:
            redis_port = choose_port(
                settings.embedded_redis_port,
                name="EMBEDDED_REDIS_PORT",
                host="127.0.0.1",
                must_be_exact=False,
            )
            redis_server = EmbeddedRedis(settings.redis_dir, port=redis_port, appendonly=True)
            say(f"starting embedded redis-server on port {redis_port} (data: {settings.redis_dir})")
            try:
                redis_url = redis_server.start()
            except RuntimeError as exc:
                raise LaunchError(str(exc)) from None
            redis_description = f"{redis_url} (embedded, append-only file in {settings.redis_dir})"
        else:
            redis_url = settings.external_redis_url
            shown = display_redis_url(redis_url)
            if not redis_answers(redis_url, timeout=2.0):
                raise LaunchError(
                    f"REDIS_URL={shown} does not answer PING; fix it, or unset it to use the embedded Redis"
                )
            redis_description = f"{shown} (external, from REDIS_URL)"
        if stop.requested:
            return 0

        port = choose_port(settings.port, name="PORT", host="0.0.0.0", must_be_exact=settings.port_explicit)
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        env = child_environment(os.environ, redis_url=redis_url, port=port, var_dir=settings.var_dir)
        say(f"starting {', '.join(process_names)} from {procfile}")
        honcho = subprocess.Popen(
            honcho_command(procfile, port, process_names),
            cwd=procfile.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Own session: a terminal Ctrl-C reaches only us, and we stop
            # honcho and then Redis in that order.
            start_new_session=True,
        )
        assert honcho.stdout is not None
        relay_thread = threading.Thread(target=relay, args=(honcho.stdout,), name="honcho-relay", daemon=True)
        relay_thread.start()

        health_url = f"http://127.0.0.1:{port}/healthz"
        if not wait_until_healthy(health_url, honcho, stop, args.ready_timeout):
            if stop.requested:
                return 0
            returncode = honcho.poll()
            if returncode is not None:
                complain(f"honcho exited with code {returncode} before {health_url} answered 200")
                return exit_code(returncode) or 1
            raise LaunchError(f"{health_url} did not answer 200 within {args.ready_timeout:g}s")

        emit(banner(port, redis_description, process_names) + "\n")
        while not stop.requested:
            returncode = honcho.poll()
            if returncode is not None:
                say(f"honcho exited with code {returncode}")
                return exit_code(returncode)
            time.sleep(0.2)
        return 0
    except LaunchError as exc:
        complain(str(exc))
        return 1
    finally:
        shutdown(stop, honcho, relay_thread, redis_server)


def shutdown(
    stop: StopRequest,
    honcho: subprocess.Popen[bytes] | None,
    relay_thread: threading.Thread | None,
    redis_server: EmbeddedRedis | None,
) -> None:
    """Stop what main() started: the processes first, then Redis, whatever happened before."""
    if stop.signum is not None:
        say(f"{signal.Signals(stop.signum).name} received, shutting down")
    try:
        if honcho is not None:
            stop_honcho(honcho)
        if relay_thread is not None:
            relay_thread.join(timeout=5)  # honcho's last lines ("web.1 stopped") before ours
    finally:
        if redis_server is not None:
            if redis_server.running:
                say("stopping embedded redis-server")
            redis_server.stop()
        stop.uninstall()
        if honcho is not None or redis_server is not None:
            say("stopped")


if __name__ == "__main__":
    sys.exit(main())
