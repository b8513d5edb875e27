"""Calls to another application: refusals pass through, failures become 503s."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from deployments import handles
from deployments.handles import RemoteDeployment, RemoteRequirementsChecker
from services.errors import DependencyUnavailable, InvalidInput

pytestmark = pytest.mark.unit


class _Wrapped(Exception):
    """What Ray raises for an error in the remote method: the original is ``cause``."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__("remote failure")
        self.cause = cause


class _FakeHandle:
    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, method: str) -> Any:
        fake = self

        class _Method:
            def remote(self, **kwargs: Any) -> Any:
                fake.calls.append((method, kwargs))
                return fake._answer()

        return _Method()

    async def _answer(self) -> Any:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        if self.outcome == "hang":
            await asyncio.sleep(3600)
        return self.outcome


def _remote(outcome: Any) -> tuple[RemoteDeployment, _FakeHandle]:
    handle = _FakeHandle(outcome)
    remote = RemoteDeployment(
        deployment="Verification", app_name="verification", what="Verifications", handle=handle
    )  # type: ignore[arg-type]
    return remote, handle


async def test_checker_asks_the_verification_deployment():
    remote, handle = _remote(["an operator certification for excavator"])
    missing = await RemoteRequirementsChecker(remote).missing_requirements(
        call_id="c1", certification="excavator", min_insurance=Decimal("1000000")
    )
    assert missing == ["an operator certification for excavator"]
    assert handle.calls == [
        (
            "missing_requirements",
            {"call_id": "c1", "certification": "excavator", "min_insurance": Decimal("1000000")},
        )
    ]


async def test_a_refusal_of_the_other_service_passes_through_unchanged():
    refusal = InvalidInput("That certification is not one we know.", field="certification")
    remote, _ = _remote(_Wrapped(refusal))
    with pytest.raises(InvalidInput) as raised:
        await remote.call("missing_requirements", call_id="c1")
    assert raised.value is refusal


async def test_a_broken_remote_is_dependency_unavailable():
    remote, _ = _remote(RuntimeError("actor died"))
    with pytest.raises(DependencyUnavailable) as raised:
        await remote.call("missing_requirements")
    assert raised.value.message.startswith("Verifications cannot be checked")


async def test_a_slow_remote_times_out_as_dependency_unavailable(monkeypatch):
    monkeypatch.setattr(handles, "REMOTE_TIMEOUT_SECONDS", 0.01)
    remote, _ = _remote("hang")
    with pytest.raises(DependencyUnavailable):
        await remote.call("missing_requirements")
