"""Asking a saga step again while its outcome is unknown (a timeout, a store down), and running
a saga to its end even if its caller goes away."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from services.errors import DependencyUnavailable, DomainError

log = logging.getLogger(__name__)

BOOK_UNKNOWN = "Test drives cannot be booked right now; try again soon."
CHANGE_UNWIRED = "Test drives cannot be changed right now; try again soon."
MOVE_UNKNOWN = "The test drive could not be moved just now; try again soon."
# Pauses before each try of a saga step whose outcome was unknown (a timeout, a store down).
TEST_DRIVE_RETRY_PAUSES: tuple[float, ...] = (0.0, 0.2, 0.5)

_T = TypeVar("_T")


def retry_pauses() -> tuple[float, ...]:
    return TEST_DRIVE_RETRY_PAUSES


def unknown_error(
    cause: BaseException | None, message: str = BOOK_UNKNOWN
) -> DependencyUnavailable:
    """What the caller hears when a step's outcome stayed unknown: try again shortly."""
    if isinstance(cause, DependencyUnavailable):
        return cause
    error = DependencyUnavailable(message)
    error.__cause__ = cause
    return error


def _retrieve_outcome(task: asyncio.Task[Any]) -> None:
    # A saga whose caller went away still ends; its error is logged, not left unretrieved.
    if not task.cancelled() and (error := task.exception()) is not None:
        log.debug("test drive ended with an error", exc_info=error)


async def run_to_end(work: Coroutine[Any, Any, _T]) -> _T:
    """Run ``work`` to its end even if the caller goes away (Serve cancels the handler of a
    client that hung up), so a saga's compensation never stops half way."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(_retrieve_outcome)
    return await asyncio.shield(task)


async def until_known(
    call: Callable[[], Awaitable[_T]],
    *,
    step: str,
    facts: dict[str, str],
    message: str = BOOK_UNKNOWN,
) -> _T:
    """Ask ``call`` (a step carrying its idempotency key, so asking again answers what
    happened) again after each retry pause while its outcome is unknown. A refusal of the
    other service (a domain error other than DependencyUnavailable) is final and raised."""
    unknown: Exception | None = None
    for pause in retry_pauses():
        await asyncio.sleep(pause)
        try:
            return await call()
        except DependencyUnavailable as e:
            unknown = e
        except DomainError:
            raise
        except Exception as e:
            unknown = e
        log.warning("test-drive step: outcome unknown", extra={"step": step, **facts})
    raise unknown_error(unknown, message)
