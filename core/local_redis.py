"""A redis-server of our own for the embedded set-up, when no REDIS_URL is configured.

It listens on a Unix socket in the data folder (no TCP port to collide with, nothing reachable from outside) with
AOF persistence on. A second chatloop process on the same data folder finds the socket alive and shares the
server instead of starting another; only the process that started it stops it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from core.errors import SetupError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0


@dataclass
class LocalRedis:
    url: str
    process: subprocess.Popen[bytes] | None

    def stop(self) -> None:
        """Shut the server down if this process started it (SHUTDOWN flushes the AOF)."""
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
    socket_path.unlink(missing_ok=True)
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
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SetupError(f"local redis-server did not start; see {redis_dir / 'redis.log'}")
        time.sleep(0.05)
    log.info("local redis started", extra={"redis_url": url, "pid": process.pid})
    return LocalRedis(url=url, process=process)
