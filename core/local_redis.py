"""A redis-server of our own for the embedded set-up, when no REDIS_URL is configured.

It listens on a Unix socket in the data folder (no TCP port to collide with, nothing reachable from outside) with
AOF persistence on. A second chatloop process on the same data folder finds the socket alive and shares the
server instead of starting another; only the process that started it stops it, and, when asked to keep it
running, starts it again if it dies.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from core.errors import SetupError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
RESTART_BACKOFF_S = (0.5, 30.0)
"""The first pause before starting a dead server again, doubled after each failed start up to the second."""


@dataclass
class LocalRedis:
    url: str
    process: subprocess.Popen[bytes] | None
    args: list[str] = field(default_factory=list)
    """The command that started the server, to start it again with."""
    log_path: Path | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def keep_running(self) -> None:
        """Start the server again on its append-only file whenever it dies, until :meth:`stop`.

        The embedded set-up has no init system to do it: without this, a redis-server killed by the OOM killer or
        by hand would leave the loop without a store until someone restarts chatloop. Every client reconnects by
        itself to the same socket. Does nothing for a server this process joined rather than started.
        """
        if self.process is None:
            return
        threading.Thread(target=self._watch, name="local-redis-watch", daemon=True).start()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            code = self.process.wait()
            pause = RESTART_BACKOFF_S[0]
            while not self._start_again(code):
                if self._stopping.wait(pause):
                    return
                pause = min(pause * 2, RESTART_BACKOFF_S[1])

    def _start_again(self, code: int) -> bool:
        """False if the server did not start; under the lock, so that :meth:`stop` finds whatever was started."""
        with self._lock:
            if self._stopping.is_set():
                return True
            log.error("local redis exited; starting it again", extra={"redis_url": self.url, "exit_code": code})
            try:
                self.process = self._launch()
            except SetupError as error:
                log.error("local redis did not start again", extra={"error": str(error)})
                return False
            return True

    def _launch(self) -> subprocess.Popen[bytes]:
        """Start redis-server and wait until it answers (a stale socket file of a dead one is removed first)."""
        Path(self.url.removeprefix("unix://")).unlink(missing_ok=True)
        process = subprocess.Popen(self.args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(self.url):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise SetupError(f"local redis-server did not start; see {self.log_path}")
            time.sleep(0.05)
        log.info("local redis started", extra={"redis_url": self.url, "pid": process.pid})
        return process

    def stop(self) -> None:
        """Shut the server down if this process started it (SHUTDOWN flushes the AOF)."""
        with self._lock:
            self._stopping.set()
            self._shut_down()

    def _shut_down(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            redis.Redis.from_url(self.url).shutdown()
        except redis.ConnectionError:
            pass  # SHUTDOWN closes the connection before answering
        try:
            self.process.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
        log.info("local redis stopped", extra={"redis_url": self.url})


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
        return False


def start_local_redis(redis_dir: Path, maxmemory_mb: int | None = None) -> LocalRedis:
    """Start (or join) the local redis-server whose data lives in ``redis_dir``; with a memory cap, past which it
    refuses writes rather than evicting any of the loop's state."""
    redis_dir = redis_dir.resolve()
    redis_dir.mkdir(parents=True, exist_ok=True)
    socket_path = redis_dir / "redis.sock"
    url = f"unix://{socket_path}"
    if _answers(url):
        log.info("joining running local redis", extra={"redis_url": url})
        return LocalRedis(url=url, process=None)
    binary = shutil.which("redis-server")
    if binary is None:
        raise SetupError(
            "redis-server is not installed: run `make setup` as root, or `apt-get install redis-server`, "
            "or set REDIS_URL to an existing Redis."
        )
    args = [
        binary,
        "--port",
        "0",
        "--unixsocket",
        str(socket_path),
        "--unixsocketperm",
        "700",
        "--dir",
        str(redis_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--logfile",
        str(redis_dir / "redis.log"),
        *(["--maxmemory", f"{maxmemory_mb}mb", "--maxmemory-policy", "noeviction"] if maxmemory_mb else []),
    ]
    local = LocalRedis(url=url, process=None, args=args, log_path=redis_dir / "redis.log")
    local.process = local._launch()
    return local
