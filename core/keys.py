"""Every Redis key name the system uses, in one place.

All keys share the ``chatloop:`` prefix so that one Redis can host other data too. Keys of one completion or one
conversation are built from its id alone, so that no multi-key operation spans two of them.
"""

from __future__ import annotations

PREFIX = "chatloop"

EVERY_WINDOW = "*"
"""In place of a time window in a counter's key: the pattern that matches the counter of every window."""

COMPLETIONS_STREAM = f"{PREFIX}:completions"
"""Append-only log of recorded completion ids, oldest first; the trainer reads real prompts from it."""

EVENTS_STREAM = f"{PREFIX}:events"
"""Append-only log of every accepted feedback gesture (ratings, comparisons, regenerations)."""

PAIRS_STREAM = f"{PREFIX}:pairs"
"""Preference pairs derived from the events, read by the trainer through a consumer group."""

TRAINER_GROUP = "trainer"
"""The consumer group whose acknowledgements mean "trained on"."""


def completion_key(completion_id: str) -> str:
    """The JSON record of one completion."""
    return f"{PREFIX}:completion:{completion_id}"


def in_flight_key(completion_id: str) -> str:
    """Present while a completion is still being generated, so that rating it early is a clear 409."""
    return f"{PREFIX}:in-flight:{completion_id}"


def conversation_key(conversation_id: str) -> str:
    """The feedback state of one conversation: current ratings, regeneration links, pairs already emitted, and the
    revision that every write increments (``feedback/commit.py``)."""
    return f"{PREFIX}:conversation:{conversation_id}"


def user_completions_key(user_id: str) -> str:
    """Set: the completion ids of one user's records, for an erasure to find them."""
    return f"{PREFIX}:user-completions:{user_id}"


def user_name_key(name_id: str) -> str:
    """Set: the user ids under which one ``user`` value (keyed, ``core/keyed_ids.py``) was served, under any key."""
    return f"{PREFIX}:user-names:{name_id}"


def version_stats_key(version: str) -> str:
    """Counters of one policy version: answers served, thumbs, regenerations, comparisons won and lost."""
    return f"{PREFIX}:stats:{version}"


def canary_counts_key(period: str) -> str:
    """Hash: ``<version>:served`` and ``<version>:down`` of the routed, eligible answers of one canary period
    (``feedback/canary.py``)."""
    return f"{PREFIX}:canary:{period}"


def canary_users_key(period: str, version: str) -> str:
    """HyperLogLog of the users that one version's counted answers of a canary period went to."""
    return f"{PREFIX}:canary-users:{period}:{version}"


STATS_HISTORY = f"{PREFIX}:stats-history"
"""Stream of snapshots of every version's counters, one per period, for rates over time."""


def stats_snapshot_lock(slot: int) -> str:
    """Taken by the one server that writes the snapshot of a period."""
    return f"{PREFIX}:stats-history-lock:{slot}"


def retention_lock(slot: int) -> str:
    """Taken by the one server that trims the streams in a period (``feedback/retention.py``)."""
    return f"{PREFIX}:retention-lock:{slot}"


VERSIONS_SEEN = f"{PREFIX}:stats-versions"
"""The set of versions that have counters."""


def rate_limit_key(user_id: str, window: int | str) -> str:
    """Feedback gestures of one user in one time window."""
    return f"{PREFIX}:rate:{user_id}:{window}"


def pair_quota_key(user_id: str, window: int | str) -> str:
    """Pairs one user contributed in one time window."""
    return f"{PREFIX}:pair-quota:{user_id}:{window}"


def key_pair_quota_key(principal_id: str, window: int | str) -> str:
    """Pairs all the users of one API key (or one account) contributed in one time window."""
    return f"{PREFIX}:key-pair-quota:{principal_id}:{window}"


def chat_rate_key(principal: str) -> str:
    """When a principal's bucket of chat requests per minute will next be full (``server/limits.py``)."""
    return f"{PREFIX}:chat-rate:{principal}"


def chat_in_flight_key(principal: str) -> str:
    """Sorted set: a principal's chat requests in flight, scored by when their lease expires."""
    return f"{PREFIX}:chat-in-flight:{principal}"


VERSIONS = f"{PREFIX}:versions"
"""Hash: policy version id -> its JSON registry entry."""


def version_pairs_key(version: str) -> str:
    """Set: the ids of the pairs a version was trained on, so that an erasure can tell which versions learnt from
    erased pairs."""
    return f"{PREFIX}:version-pairs:{version}"


ERASURES = f"{PREFIX}:erasures"
"""Stream: each erasure, when, by whom, of what kind and how much, without the erased content."""

VERSION_SEQUENCE = f"{PREFIX}:version-seq"
"""Counter behind version ids v1, v2, ..."""

ROUTING = f"{PREFIX}:routing"
"""JSON: the active version, the canary and its share, the rollback history (``core.routing.Routing``)."""

VERSION_ERRORS = f"{PREFIX}:version-errors"
"""Hash: version id -> JSON of the last failure of a server to load it (which server, the error, when)."""

REGISTRY_CHANNEL = f"{PREFIX}:registry"
"""Pub/sub channel told of every registry change."""

TRAINER_LOCK = f"{PREFIX}:trainer-lock"
"""Held (with a lease) by the one trainer that may run rounds."""

TRAINER_ROUNDS = f"{PREFIX}:trainer-rounds"
"""Stream of finished training rounds and their metrics, for the dashboard."""

TRAINER_CARRIED = f"{PREFIX}:trainer-carried"
"""Set: ids of the new pairs of a round the gate rejected, which the next round takes as new again."""

ACCOUNTS = f"{PREFIX}:accounts"
"""Hash: account name -> its JSON record (``server/identity/accounts.py``)."""


def session_key(token_hash: str) -> str:
    """A signed-in browser: the account's name, expiring with the session."""
    return f"{PREFIX}:session:{token_hash}"


def account_sessions_key(account: str) -> str:
    """Set of the hashes of an account's sessions, so that all of them can be revoked at once."""
    return f"{PREFIX}:account-sessions:{account}"


def signin_link_key(token_hash: str) -> str:
    """A one-time sign-in link: the account's name, until used or expired."""
    return f"{PREFIX}:signin-link:{token_hash}"


def signin_attempts_key(subject: str, window: int | str) -> str:
    """Sign-in attempts for one account or from one address in one time window."""
    return f"{PREFIX}:signin-attempts:{subject}:{window}"


API_KEYS = f"{PREFIX}:api-keys"
"""Hash: hash of a managed API key -> its JSON record (``server/identity/api_keys.py``)."""

API_KEY_NAMES = f"{PREFIX}:api-key-names"
"""Hash: a managed key's owner and name -> the hash of the key, so that names are unique per owner."""


def conversations_key(account: str) -> str:
    """Hash: conversation id -> the JSON of one of the account's conversations as the chat page shows it."""
    return f"{PREFIX}:conversations:{account}"
