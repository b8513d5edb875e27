"""One function that builds every application's FastAPI app with the shared edge, and the
error statuses of the OpenAPI contract. The routes' dependency aliases are in
:mod:`deployments.deps`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from pydantic import BaseModel, Field

# WRITE and IdempotencyKey re-exported: older callers import the aliases from here.
from deployments.deps import PERSONAL as PERSONAL
from deployments.deps import WRITE as WRITE
from deployments.deps import IdempotencyKey as IdempotencyKey
from deployments.edge import EdgeMiddleware, install_error_handlers, is_write, require_token
from deployments.metrics import Metrics
from services.settings import Settings

VERSION = "0.1.0"

_NO_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}


def new_api(
    *,
    service: str,
    title: str,
    settings: Settings,
    metrics: Metrics | None = None,
    state: dict[str, Any] | None = None,
    docs: bool = True,
) -> FastAPI:
    """A FastAPI app with the error mapping, the bearer token, the body limit and the request
    metric installed. ``state`` lands on ``app.state`` for the handlers' dependencies, beside
    the settings and the metrics (:mod:`deployments.deps`)."""
    app = FastAPI(
        title=title,
        version=VERSION,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        telemetry=None if settings.otel_telemetry else _NO_TELEMETRY,
    )
    app.state.api_token = settings.api_token
    app.state.settings = settings
    app.state.metrics = metrics
    for key, value in (state or {}).items():
        setattr(app.state, key, value)
    install_error_handlers(app)
    document_statuses(app)
    app.add_middleware(
        EdgeMiddleware,
        service=service,
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics,
        max_in_flight=settings.admission_max_in_flight,
        retry_after_seconds=settings.admission_retry_after_seconds,
    )
    return app


def service_api(
    name: str,
    router: APIRouter,
    settings: Settings,
    /,
    *,
    metrics: Metrics | None = None,
    **state: Any,
) -> FastAPI:
    """One service's app: :func:`new_api` titled after it, ``state`` on ``app.state`` (its
    ``service`` first), and the routes of its module's ``router``."""
    app = new_api(
        service=name,
        title=f"callmesh {name}",
        settings=settings,
        metrics=metrics,
        state=state,
    )
    include(app, router)
    return app


def include(app: FastAPI, router: APIRouter) -> None:
    """Add a module's routes to ``app`` as routes of its own.

    FastAPI 0.165's ``include_router`` keeps an included router behind one lazy route, so
    ``app.routes`` would list no :class:`APIRoute` for :func:`document_statuses` (nor the
    contract tests) to read. Each app gets its own copy of every route instead, as
    ``include_router`` made before, so documenting one app's statuses touches no other's."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"only API routes are copied, not {route!r}")
        app.router.add_api_route(
            route.path,
            route.endpoint,
            response_model=route.response_model,
            status_code=route.status_code,
            tags=route.tags,
            dependencies=route.dependencies,
            summary=route.summary,
            description=route.description,
            response_description=route.response_description,
            responses=route.responses,
            deprecated=route.deprecated,
            methods=route.methods,
            operation_id=route.operation_id,
            include_in_schema=route.include_in_schema,
            response_class=route.response_class,
            name=route.name,
            callbacks=route.callbacks,
            openapi_extra=route.openapi_extra,
        )


# -- the contract: every status a route can answer, in OpenAPI ----------------------------------


class ErrorBody(BaseModel):
    code: str = Field(description="Stable and machine-readable: unavailable, hold_expired...")
    message: str = Field(description="A sentence a caller or an LLM can act on.")
    details: dict[str, Any] | None = Field(
        None, description="What the code needs said: the missing verifications, the bad fields."
    )


class Error(BaseModel):
    """Every error the mesh answers, whatever the status."""

    error: ErrorBody


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 0},
    }
}
# Why each status happens, for the OpenAPI document; headers the answer carries.
_STATUSES: dict[int, tuple[str, dict[str, Any]]] = {
    401: (
        "No bearer token, or not CALLMESH_API_TOKEN.",
        {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    ),
    404: ("Nothing by that id or phone number.", {}),
    409: (
        "Conflicts with what is booked or recorded (taken, already ended, a verification "
        "missing), or a request with the same Idempotency-Key is still running.",
        {},
    ),
    410: ("The hold expired.", {}),
    413: ("The body is over the size limit.", {}),
    422: ("The input is not valid; details.errors names the fields at fault.", {}),
    429: ("Over a rate limit or quota.", _RETRY_AFTER),
    503: ("A store or service is down, or the mesh is shedding load.", _RETRY_AFTER),
}
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def route_statuses(route: APIRoute) -> list[int]:
    """The error statuses a route can answer, from what the route is.

    Every route can answer 503 (a store down, or load shed); 422 when it takes any input;
    413 with a body; 401 behind the token; 429 on a POST, PUT or DELETE (the rate limits on
    writes go by method; a lookup by phone is a POST too); 404 when it names
    something (a path id, a phone to look up, a body naming a unit, a call or a service); 409
    on a write that is keyed or names what it changes; 410 on a hold."""
    dependant = route.dependant
    has_body = dependant.body_params != []
    has_path = dependant.path_params != []
    inputs = has_body or has_path or dependant.query_params != [] or dependant.header_params
    keyed = any(p.alias == "Idempotency-Key" for p in dependant.header_params)
    token = any(d.dependency is require_token for d in route.dependencies)
    by_phone = any(p.name == "phone" for p in dependant.query_params)
    posted = any(is_write(m) for m in route.methods or ())
    # A POST that reads (a lookup by phone) lists PERSONAL, not WRITE: it changes nothing, so
    # no 409; the rate limits go by method, so it may still answer 429.
    write = posted and not any(d is PERSONAL for d in route.dependencies)
    statuses = {503}
    if inputs:
        statuses.add(422)
    if has_body:
        statuses.add(413)
    if token:
        statuses.add(401)
    if posted:
        statuses.add(429)
    if has_path or has_body or by_phone:
        statuses.add(404)
    if write and (keyed or has_path):
        statuses.add(409)
    if any(p.name == "hold_id" for p in dependant.path_params):
        statuses.add(410)
    return sorted(statuses)


def error_responses(route: APIRoute) -> dict[str, dict[str, Any]]:
    """``responses=`` for a route: each status it can answer, with the error schema."""
    out: dict[str, dict[str, Any]] = {}
    for status in route_statuses(route):
        description, headers = _STATUSES[status]
        response: dict[str, Any] = {"description": description, "content": _ERROR_CONTENT}
        if headers:
            response["headers"] = headers
        out[str(status)] = response
    return out


def _error_schemas() -> dict[str, Any]:
    schema = Error.model_json_schema(ref_template="#/components/schemas/{model}")
    defs: dict[str, Any] = schema.pop("$defs", {})
    return {**defs, "Error": schema}


def add_links(schema: dict[str, Any]) -> None:
    """OpenAPI links from each answer that names a thing to every route addressed by it: a
    hold's ``hold_id`` to rate, confirm, release; an appointment's to reschedule and cancel.
    Read from the document (a 2xx body with the property a path id is named after), so a new
    route is linked without anyone writing the link; a fuzzer follows them as workflows."""
    schemas = schema.get("components", {}).get("schemas", {})
    operations = [
        (path, method, operation)
        for path, item in schema.get("paths", {}).items()
        for method, operation in item.items()
    ]
    for _, _, operation in operations:
        for status, response in operation.get("responses", {}).items():
            if not status.startswith("2"):
                continue
            ref = (
                response.get("content", {})
                .get("application/json", {})
                .get("schema", {})
                .get("$ref", "")
            )
            answered = set(schemas.get(ref.rsplit("/", 1)[-1], {}).get("properties", {}))
            links = {}
            for _, _, target in operations:
                ids = [p["name"] for p in target.get("parameters", []) if p["in"] == "path"]
                if ids and set(ids) <= answered and "operationId" in target:
                    links[target["operationId"]] = {
                        "operationId": target["operationId"],
                        "parameters": {f"path.{i}": f"$response.body#/{i}" for i in ids},
                    }
            if links:
                response["links"] = links


def document_statuses(app: FastAPI) -> None:
    """Make ``app.openapi()`` list every route's error statuses (:func:`route_statuses`) with
    the :class:`Error` schema, computed when the document is first asked for, so every route
    added after :func:`new_api` is covered. A status a route declares itself wins."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            for route in app.routes:
                if isinstance(route, APIRoute) and route.include_in_schema:
                    responses: dict[int | str, dict[str, Any]] = {}
                    responses.update(error_responses(route))
                    responses.update({str(k): v for k, v in route.responses.items()})
                    route.responses = responses
            schema = generate()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(_error_schemas())
            add_links(schema)
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]
