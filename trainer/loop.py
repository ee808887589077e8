"""The trainer process: one round whenever enough new pairs or enough time have accumulated, under a lock.

The lock is a Redis key with a lease (``SET NX PX``), renewed by a background thread while a round runs and
released only by its holder: a second trainer waits, and a trainer that dies frees it when the lease runs out.

Under ``accelerate launch`` every process runs this loop, and only the main one has a Redis client: it holds the
lock and decides when a round is due, and the others follow its decisions (``trainer/distributed.py``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from contextlib import nullcontext

import redis
import torch

from core import keys
from core.config import Settings
from feedback.pairs import PairConsumer
from trainer.distributed import get_accelerator, main_then_share
from trainer.dpo import References
from trainer.round import RoundResult, run_round

log = logging.getLogger(__name__)

CONSUMER = "trainer"
RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class TrainerLock:
    def __init__(self, client: redis.Redis, lease_s: float):
        self.client = client
        self.lease_ms = int(lease_s * 1000)
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()

    def acquire(self) -> bool:
        return bool(self.client.set(keys.TRAINER_LOCK, self.token, nx=True, px=self.lease_ms))

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_ms / 3000):
            self.client.eval(RENEW, 1, keys.TRAINER_LOCK, self.token, self.lease_ms)

    def __enter__(self) -> TrainerLock:
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._renewer.join()
        self.client.eval(RELEASE, 1, keys.TRAINER_LOCK, self.token)


def trainer_consumer(client: redis.Redis) -> PairConsumer:
    """The lock lets one trainer read at a time, so any pair read and not acknowledged belongs to a round that
    died: take it back at once."""
    return PairConsumer(client, CONSUMER, claim_idle_s=0)


def due(waiting_pairs: int, since_last_round_s: float, settings: Settings) -> bool:
    """Enough new pairs, or enough time with at least one."""
    loop = settings.trainer
    return waiting_pairs >= loop.min_new_pairs or (
        waiting_pairs > 0 and since_last_round_s >= loop.max_wait_minutes * 60
    )


def fit_threads_to_cores() -> None:
    """One torch thread per core this process may use, shared among the processes of a run. Beside a CPU engine,
    ``chatloop up``'s server moves the trainer off the engine's cores once the engine is up (``server/engine.py``),
    after torch sized its pool for every core: a thread left over would share a core with another and every
    parallel step would wait for it."""
    if get_accelerator().device.type == "cpu":
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // get_accelerator().num_processes))


def train_once(settings: Settings, client: redis.Redis | None, references: References | None = None) -> RoundResult:
    """One round under the lock. ``client`` is None on every process but the main one; ``references`` carries the
    preference stage's reference log-probabilities from one round to the next (none: a round on its own)."""
    lock = TrainerLock(client, settings.trainer.lock_lease_s) if client is not None else None
    if not main_then_share(lambda: lock.acquire()):
        return RoundResult(None, "another trainer holds the lock")
    with lock or nullcontext():
        fit_threads_to_cores()
        consumer = trainer_consumer(client) if client is not None else None
        return run_round(settings, client, consumer, References() if references is None else references)


def run_forever(settings: Settings, client: redis.Redis | None) -> None:
    """Rounds whenever they are due. ``client`` is None on every process but the main one.

    With several processes, a round that fails ends the trainer: a process that failed inside the training would
    leave the others waiting in a collective call, so all stop (``accelerate launch`` ends the others when one
    exits) and the trainer's supervisor starts it again. The round's pairs stay unacknowledged either way.
    """
    consumer = trainer_consumer(client) if client is not None else None
    references = References()
    last_round = time.monotonic()
    log.info("trainer waiting for pairs", extra={"min_new_pairs": settings.trainer.min_new_pairs})
    while True:
        try:
            if main_then_share(lambda since=last_round: due(consumer.waiting(), time.monotonic() - since, settings)):
                result = train_once(settings, client, references)
                version = result.version.id if result.version else None
                log.info("round finished", extra={"version": version, "reason": result.reason})
                last_round = time.monotonic()
        except redis.RedisError as exc:
            # Only the main process talks to Redis, and it hands its errors to the others: all retry together.
            log.warning("redis unavailable; retrying", extra={"error": type(exc).__name__})
        except Exception:
            if get_accelerator().num_processes > 1:
                raise
            # A failed round leaves its pairs unacknowledged: the next round trains on them again.
            log.exception("training round failed")
            last_round = time.monotonic()
        time.sleep(settings.trainer.poll_seconds)
