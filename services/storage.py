"""What "a store is down" means, once for every service.

A request that was fine but met a PostgreSQL or Redis that could not serve it (unreachable,
restarting, out of connections, a statement cancelled, a deadlock that survived its retries, a
pool with no free connection in time) is answered DependencyUnavailable: 503 with Retry-After at
the edge, never a 500. Every service wraps its store calls in :func:`store_errors`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import RedisError

from services.db import PG_RETRYABLE, PG_UNAVAILABLE
from services.errors import DependencyUnavailable

# Every Redis failure: connection and timeout errors, a replica that is read-only after a
# failover, a server still loading its data, out of memory.
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (RedisError,)

STORE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    *PG_UNAVAILABLE,
    *PG_RETRYABLE,
    *REDIS_UNAVAILABLE,
)

RETRY_AFTER_SECONDS = 2


@contextmanager
def store_errors(message: str) -> Iterator[None]:
    """Turn a store that cannot serve the request into DependencyUnavailable with ``message``
    (a sentence a caller can hear); every other error passes unchanged."""
    try:
        yield
    except STORE_UNAVAILABLE as e:
        raise DependencyUnavailable(message, retry_after=RETRY_AFTER_SECONDS) from e
