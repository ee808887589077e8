"""How chatloop's own asynchronous clients (the simulated users, the soak) keep their connections.

httpcore's pool (under httpx and the OpenAI SDK) hands an idle connection to a waiting request, and that
connection stays "idle" until the request's task runs. If the connection's keep-alive runs out meanwhile, the next
pass over the pool closes it under the request, which then fails with ``ReadError`` although the server did
nothing (encode/httpcore#1110 is the same race by another path). With httpx's 5 s keep-alive, a client process
starved of CPU for a few seconds (a training round loading its models on the same two cores) hits it: the soak
recorded such a request waiting 7.4 s in the pool, then its body failing on a connection closed by its own client,
with no TCP reset on the host. A keep-alive of a minute leaves no such window in a client that keeps its
connections busy, and stays under the server's own (``CHATLOOP_KEEP_ALIVE_S``, 75 s), so that the server never
closes a connection just as the client reuses it.
"""

from __future__ import annotations

import httpx

KEEP_ALIVE_S = 60.0


def limits(max_connections: int = 100) -> httpx.Limits:
    """httpx's default size of pool, the keep-alive above, and no cap on idle connections: closing those over a cap
    is the other path by which the pool closes a connection it has handed out."""
    return httpx.Limits(max_connections=max_connections, max_keepalive_connections=None, keepalive_expiry=KEEP_ALIVE_S)
