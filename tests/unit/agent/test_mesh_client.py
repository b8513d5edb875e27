"""The mesh client against ``httpx.MockTransport``: error bodies become typed errors carrying
the mesh's sentence, idempotency keys repeat exactly when a write repeats, retries are only
where they cannot write twice, and tools are timed into the histogram and the calls service."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest
from livekit.agents import ToolError
from prometheus_client import REGISTRY

from agent.config import AgentSettings
from agent.mesh import (
    MeshClient,
    MeshConflict,
    MeshError,
    MeshExpired,
    MeshInvalid,
    MeshNotFound,
    MeshTimeout,
    MeshUnauthorized,
    MeshUnavailable,
    WriteKeys,
)
from agent.mesh_models import Usage

pytestmark = pytest.mark.unit

APPOINTMENT = {
    "appointment_id": "a1",
    "reference": "REF123",
    "status": "confirmed",
    "service_type": "oil_change",
    "service_name": "Oil change",
    "start": "2030-01-07T10:00:00-05:00",
    "end": "2030-01-07T10:30:00-05:00",
    "price_min_usd": 49.0,
    "price_max_usd": 89.0,
    "phone": "+15125550147",
}


def _error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"code": code, "message": message}}, headers=headers
    )


class Recorder:
    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)

    def keys(self) -> list[str | None]:
        return [r.headers.get("Idempotency-Key") for r in self.requests]


def _client(
    answer: Callable[[httpx.Request], httpx.Response], **settings: object
) -> tuple[MeshClient, Recorder]:
    recorder = Recorder(answer)
    http = httpx.AsyncClient(transport=httpx.MockTransport(recorder), base_url="http://mesh")
    options: dict[str, object] = {"api_token": "s3cret-token", "mesh_retries": 1}
    options.update(settings)
    return MeshClient(call_id="call-1", settings=AgentSettings(**options), client=http), recorder


async def _book(client: MeshClient, start: str = "2030-01-07T10:00") -> None:
    await client.book_appointment(phone="5125550147", service_type="oil_change", start=start)


@pytest.mark.parametrize(
    ("status", "code", "cls", "outcome"),
    [
        (422, "invalid_input", MeshInvalid, "invalid"),
        (404, "not_found", MeshNotFound, "not_found"),
        (409, "unavailable", MeshConflict, "conflict"),
        (410, "hold_expired", MeshExpired, "conflict"),
    ],
)
async def test_an_error_body_becomes_a_typed_error_with_the_mesh_sentence(
    status, code, cls, outcome
):
    sentence = "That time is taken for an oil change. That day I can offer 10:30 am."
    client, recorder = _client(lambda r: _error(status, code, sentence))
    with pytest.raises(cls) as caught:
        await _book(client)
    error = caught.value
    assert isinstance(error, ToolError)  # the model hears it as is
    assert (error.message, error.code, error.status, error.outcome) == (
        sentence,
        code,
        status,
        outcome,
    )
    assert len(recorder.requests) == 1  # a refusal is an answer: never retried


async def test_a_503_is_retried_once_with_the_same_key_then_heard_as_our_sentence():
    client, recorder = _client(
        lambda r: _error(
            503, "dependency_unavailable", "Holds are unavailable.", **{"Retry-After": "2"}
        )
    )
    with pytest.raises(MeshUnavailable) as caught:
        await _book(client)
    assert caught.value.message == "Holds are unavailable."
    keys = recorder.keys()
    assert len(keys) == 2 and keys[0] is not None and keys[0] == keys[1]


async def test_a_write_whose_first_request_is_still_running_is_asked_again_with_its_key():
    answers = iter(
        [
            _error(409, "idempotency_key_in_flight", "Still processing.", **{"Retry-After": "1"}),
            _error(409, "unavailable", "That time is taken."),
        ]
    )
    client, recorder = _client(lambda r: next(answers))
    with pytest.raises(MeshConflict) as caught:
        await _book(client)
    assert caught.value.code == "unavailable"
    keys = recorder.keys()
    assert len(keys) == 2 and keys[0] is not None and keys[0] == keys[1]


async def test_a_timeout_retries_the_same_write_and_then_says_so():
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    client, recorder = _client(answer)
    with pytest.raises(MeshTimeout) as caught:
        await _book(client)
    assert "slow to answer" in caught.value.message and caught.value.outcome == "timeout"
    assert len(set(recorder.keys())) == 1 and len(recorder.requests) == 2


async def test_a_refused_token_is_not_read_to_the_caller():
    client, _ = _client(lambda r: _error(401, "unauthorized", "A valid bearer token is required."))
    with pytest.raises(MeshUnauthorized) as caught:
        await _book(client)
    assert "bearer" not in caught.value.message and "can't reach" in caught.value.message


async def test_a_body_that_is_not_ours_still_gives_a_sentence():
    client, _ = _client(lambda r: httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(MeshUnavailable) as caught:
        await client.list_service_types()
    assert caught.value.message.startswith("I can't reach our booking system")


async def test_a_proposal_is_never_retried_and_carries_no_key():
    client, recorder = _client(lambda r: _error(503, "dependency_unavailable", "Down."))
    with pytest.raises(MeshUnavailable):
        await client.propose_rate("h1", rate=Decimal("300"))
    assert recorder.keys() == [None]


async def test_writes_carry_the_token_and_a_key_that_repeats_only_for_a_repeat():
    client, recorder = _client(lambda r: httpx.Response(201, json=APPOINTMENT))
    await _book(client)
    await _book(client)  # the LLM repeats the same tool call: same key, the mesh replays
    await _book(client, start="2030-01-07T11:00")  # another write: new key
    await _book(client)  # the first again, after another write succeeded: a new request
    keys = recorder.keys()
    assert keys[0] == keys[1]
    assert len({keys[0], keys[2], keys[3]}) == 3
    assert all(r.headers["Authorization"] == "Bearer s3cret-token" for r in recorder.requests)
    assert json.loads(recorder.requests[0].content)["call_id"] == "call-1"


async def test_a_failed_write_keeps_its_key_for_the_retry():
    answers = iter([_error(409, "unavailable", "Taken."), httpx.Response(201, json=APPOINTMENT)])
    client, recorder = _client(lambda r: next(answers))
    with pytest.raises(MeshConflict):
        await _book(client)
    await _book(client)
    assert recorder.keys()[0] == recorder.keys()[1]


def test_keys_are_per_call_and_valid_for_the_mesh():
    a, b = WriteKeys("call-a"), WriteKeys("call-b")
    key = a.key_for("book", {"x": 1})
    assert key != b.key_for("book", {"x": 1})
    assert len(key) <= 128 and key.replace("-", "").isalnum()
    assert a.key_for("book", {"x": 1}) == key
    assert a.key_for("book", {"x": 2}) != key


async def test_a_missing_customer_is_none_not_an_error():
    client, _ = _client(lambda r: _error(404, "not_found", "I could not find a customer."))
    assert await client.find_customer("5125550147") is None


async def test_lookups_by_phone_send_the_phone_in_a_body_not_the_url():
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _error(404, "not_found", "I could not find a customer.")

    client, _ = _client(answer)
    await client.find_customer("5125550147")
    with pytest.raises(MeshNotFound):
        await client.list_appointments("5125550147")
    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", "/scheduling/customers/lookup"),
        ("POST", "/scheduling/appointments/lookup"),
    ]
    for request in seen:
        assert "5125550147" not in str(request.url)
        assert json.loads(request.content) == {"phone": "5125550147"}
        assert "Idempotency-Key" not in request.headers


async def test_a_tool_is_timed_and_reported_to_the_calls_service():
    sent: list[object] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            sent.extend(json.loads(request.content))
            return httpx.Response(201, json={"call_id": "call-1", "recorded": 1, "usage": {}})
        if request.url.path.endswith("/end"):
            return httpx.Response(
                200,
                json={
                    "call_id": "call-1",
                    "flow": "appointment",
                    "outcome": "booked",
                    "booked": True,
                    "duration_seconds": 1.0,
                    "cost": {"total_usd": 0.01, "components": {"stt": 0.01}},
                    "summary": "ok",
                },
            )
        return _error(409, "unavailable", "Taken.")

    client, recorder = _client(answer)
    labels = {"tool": "unit_test_book", "outcome": "conflict"}
    before = REGISTRY.get_sample_value("callmesh_tool_latency_seconds_count", labels) or 0
    with pytest.raises(MeshConflict):
        async with client.tool("unit_test_book"):
            await _book(client)
    summary = await client.end_call(outcome="booked", usage=Usage(llm_prompt_tokens=10))
    assert REGISTRY.get_sample_value("callmesh_tool_latency_seconds_count", labels) == before + 1
    assert sent[0]["kind"] == "tool" and sent[0]["outcome"] == "conflict"  # type: ignore[index]
    assert any(e["kind"] == "usage" for e in sent)  # type: ignore[index]
    assert summary.cost.total_usd > 0
    event_keys = [
        r.headers["Idempotency-Key"] for r in recorder.requests if r.url.path.endswith("/events")
    ]
    assert len(event_keys) == len(set(event_keys))  # one key per batch


async def test_only_the_creator_closes_the_http_client():
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    await MeshClient(call_id="c", client=http).aclose()
    assert not http.is_closed
    await http.aclose()
    own = MeshClient(call_id="c", settings=AgentSettings())
    await own.aclose()
    assert own._client.is_closed


def test_every_mesh_error_is_a_tool_error():
    for cls in (MeshInvalid, MeshNotFound, MeshConflict, MeshExpired, MeshUnavailable):
        assert issubclass(cls, MeshError) and issubclass(cls, ToolError)
