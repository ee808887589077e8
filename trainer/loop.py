"""The trainer process: one round whenever enough new pairs or enough time have accumulated, under a lock.

The lock is redis-py's ``Lock``: a Redis key with a lease, taken without waiting, renewed by a background thread
while a round runs and released only by its holder. A second trainer waits, and a trainer that dies frees it when
the lease runs out; a trainer whose lease lapsed mid-round cannot register its version (``trainer/context.py``).

Under ``accelerate launch`` every process runs this loop, and only the main one has a Redis client: it holds the
lock and decides when a round is due, and the others follow its decisions (``trainer/distributed.py``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import redis
import torch
from redis.exceptions import LockNotOwnedError
from redis.lock import Lock

from core.config import Settings
from trainer.context import TrainerContext
from trainer.distributed import get_accelerator, main_then_share
from trainer.round import RoundResult, run_round

log = logging.getLogger(__name__)


@contextmanager
def renewed(lock: Lock) -> Iterator[None]:
    """The held lock's lease, renewed every third of it while the block runs, then the lock released. A renewal
    that finds the lock gone stops renewing: the round then fails its commit."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lock.timeout / 3):
            try:
                lock.reacquire()
            except LockNotOwnedError:
                log.warning("trainer lock lost", extra={"lock": lock.name})
                return
            except redis.RedisError as exc:
                log.warning("trainer lock not renewed", extra={"error": type(exc).__name__})

    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        try:
            lock.release()
        except LockNotOwnedError:
            log.warning("trainer lock lost before its release", extra={"lock": lock.name})


def due(waiting_pairs: int, since_last_round_s: float, settings: Settings) -> bool:
    """Enough new pairs, or enough time with at least one."""
    loop = settings.trainer
    return waiting_pairs >= loop.min_new_pairs or (
        waiting_pairs > 0 and since_last_round_s >= loop.max_wait_minutes * 60
    )


def _round_due(trainer: TrainerContext, last_round: float) -> bool:
    """Decided on the main process, which alone can count the waiting pairs; every process gets the answer."""
    since = time.monotonic() - last_round
    return main_then_share(lambda: due(trainer.redis.consumer.waiting(), since, trainer.settings))


def fit_threads_to_cores() -> None:
    """One torch thread per core this process may use, shared among the processes of a run. Beside a CPU engine,
    ``chatloop up``'s server moves the trainer off the engine's cores once the engine is up (``server/cpu/pinning.py``),
    after torch sized its pool for every core: a thread left over would share a core with another and every
    parallel step would wait for it."""
    if get_accelerator().device.type == "cpu":
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // get_accelerator().num_processes))


def locked_round(trainer: TrainerContext) -> RoundResult:
    """One round under the lock, or none if another trainer holds it."""
    side = trainer.redis
    if not main_then_share(lambda: side.lock.acquire()):
        return RoundResult(None, "another trainer holds the lock")
    with renewed(side.lock) if side is not None else nullcontext():
        fit_threads_to_cores()
        return run_round(trainer)


def train_once(settings: Settings, client: redis.Redis | None) -> RoundResult:
    """One round on its own. ``client`` is None on every process but the main one."""
    return locked_round(TrainerContext.create(settings, client))


def run_forever(settings: Settings, client: redis.Redis | None) -> None:
    """Rounds whenever they are due. ``client`` is None on every process but the main one.

    With several processes, a round that fails ends the trainer: a process that failed inside the training would
    leave the others waiting in a collective call, so all stop (``accelerate launch`` ends the others when one
    exits) and the trainer's supervisor starts it again. The round's pairs stay unacknowledged either way.
    """
    trainer = TrainerContext.create(settings, client)
    last_round = time.monotonic()
    log.info("trainer waiting for pairs", extra={"min_new_pairs": settings.trainer.min_new_pairs})
    while True:
        try:
            if _round_due(trainer, last_round):
                result = locked_round(trainer)
                version = result.version.id if result.version else None
                log.info("round finished", extra={"version": version, "reason": result.reason})
                last_round = time.monotonic()
        except redis.RedisError as exc:
            # Only the main process talks to Redis, and it hands its errors to the others: all retry together.
            log.warning("redis unavailable; retrying", extra={"error": type(exc).__name__, "detail": str(exc)})
        except Exception:
            if get_accelerator().num_processes > 1:
                raise
            # A failed round leaves its pairs unacknowledged: the next round trains on them again.
            log.exception("training round failed")
            last_round = time.monotonic()
        time.sleep(settings.trainer.poll_seconds)
