"""What a trainer process holds from round to round: the settings, the preference stage's reference
log-probabilities, and, on the main process, its Redis side (the client, the pair consumer, the registry and the
trainer lock). The loop creates it once (``trainer/loop.py``); a round and its stages take from it what they need.

Under ``accelerate launch`` only the main process talks to Redis (``trainer/distributed.py``): on the others
``redis`` is None, and what needs it runs on the main process alone (``main_then_share``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import redis
from redis.exceptions import LockNotOwnedError
from redis.lock import Lock

from core import keys
from core.config import Settings
from core.registry import Registry, Version
from feedback.pairs import PairConsumer
from trainer.dpo import References

STREAM_ID = re.compile(r"\d+-\d+")
CONSUMER = "trainer"
"""The trainer's name in the pairs' consumer group."""


@dataclass
class RedisSide:
    """The main process's Redis client and what works through it."""

    client: redis.Redis
    consumer: PairConsumer
    registry: Registry
    lock: Lock
    """The trainer lock: one trainer runs rounds at a time (``trainer/loop.py`` holds and renews it)."""

    @classmethod
    def connect(cls, client: redis.Redis, lease_s: float) -> RedisSide:
        # The lock lets one trainer read at a time, so any pair read and not acknowledged belongs to a round that
        # died: take it back at once. The lock's token is the process's, not a thread's: a background thread renews
        # the lease that the round's thread took.
        return cls(
            client=client,
            consumer=PairConsumer(client, CONSUMER, claim_idle_s=0),
            registry=Registry(client),
            lock=client.lock(keys.TRAINER_LOCK, timeout=lease_s, blocking=False, thread_local=False),
        )

    def carried(self) -> set[str]:
        """The stream entries of the last round's new pairs, if the gate rejected it: they keep their place in the
        next. (Before entries were carried, pair ids were: those are not looked for.)"""
        members = self.client.smembers(keys.TRAINER_CARRIED)
        texts = {member.decode() if isinstance(member, bytes) else member for member in members}
        return {text for text in texts if STREAM_ID.fullmatch(text)}

    def commit(self, version: Version, why: str, entry_ids: list[str], trained_on: list[str], carry: list[str]) -> bool:
        """In one transaction, and only while this trainer still holds the lock: the version's registry entry, the
        round's record, the ids of the pairs it was ``trained_on`` (for an erasure to say which versions learnt
        from erased pairs), the acknowledgement of the round's pairs, and the pairs to ``carry`` to the next round
        as new (those of a rejected round). False, with nothing written, when the lock is no longer this
        trainer's (its lease lapsed, and another trainer may be training on the same pairs).

        The lock's key is watched before its token is checked, so a change between the check and the transaction
        (a takeover, an expiry, or this trainer's own renewal) aborts the transaction, which is then retried."""

        def queue(pipe: redis.client.Pipeline) -> None:
            if not self.lock.owned():
                raise LockNotOwnedError("the trainer lock is no longer this trainer's", lock_name=self.lock.name)
            pipe.multi()
            self.registry.register(version, who="trainer", why=why, pipe=pipe)
            round_record = version.model_dump_json(include={"id", "parent", "state", "metrics", "gate"})
            pipe.xadd(keys.TRAINER_ROUNDS, {"round": round_record})
            if trained_on:
                pipe.sadd(keys.version_pairs_key(version.id), *trained_on)
            self.consumer.ack_in(pipe, entry_ids)
            pipe.delete(keys.TRAINER_CARRIED)
            if carry:
                pipe.sadd(keys.TRAINER_CARRIED, *carry)

        try:
            self.client.transaction(queue, self.lock.name)
        except LockNotOwnedError:
            return False
        return True


@dataclass
class TrainerContext:
    settings: Settings
    redis: RedisSide | None
    """None on every process but the main one."""
    references: References = field(default_factory=References)
    """The preference stage's reference log-probabilities, by pair id: a round scores only its new pairs."""

    @classmethod
    def create(cls, settings: Settings, client: redis.Redis | None) -> TrainerContext:
        side = RedisSide.connect(client, settings.trainer.lock_lease_s) if client is not None else None
        return cls(settings=settings, redis=side)
