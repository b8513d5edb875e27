"""The one definition of "a store is down": what becomes DependencyUnavailable, what does
not."""

from __future__ import annotations

import asyncpg
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError

from services.errors import DependencyUnavailable, InvalidInput
from services.storage import store_errors

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.TooManyConnectionsError("too many connections"),
        asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.SerializationError("could not serialize access"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.ConnectionDoesNotExistError("connection was closed"),
        # Seen when PostgreSQL restarts under load (make faults, pg-restart): the connection
        # broke in the middle of an operation and asyncpg's state machine says so.
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        ),
        TimeoutError(),
        ConnectionRefusedError(),
        RedisConnectionError("Connection refused"),
        ReadOnlyError("You can't write against a read only replica."),
    ],
    ids=type,
)
def test_a_store_that_cannot_serve_is_a_dependency_error(error):
    with pytest.raises(DependencyUnavailable) as caught, store_errors("Try again shortly."):
        raise error
    assert caught.value.message == "Try again shortly."
    assert caught.value.retry_after > 0
    assert caught.value.__cause__ is error


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.ExclusionViolationError("conflicting key value"),
        InvalidInput("bad"),
        ValueError("bug"),
    ],
    ids=type,
)
def test_anything_else_passes_unchanged(error):
    with pytest.raises(type(error)) as caught, store_errors("Try again shortly."):
        raise error
    assert caught.value is error
