"""The dependency rules of docs/design.md, read from the import statements themselves.

"services/ imports no Ray, FastAPI or LiveKit" and "agent/ reaches the mesh only through its HTTP
client": dependencies point one way, agent -> (HTTP) -> deployments -> services. Every module is
parsed with ``ast``, so a name in a comment or docstring does not count and an import inside a
function, a ``TYPE_CHECKING`` block or a relative import does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports, as absolute dotted names:
    ``import a.b``, ``from a.b import c`` (as ``a.b`` and ``a.b.c``), relative imports resolved,
    and ``importlib.import_module("a")`` / ``__import__("a")`` with a literal name."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
    return found


def _modules(package: str) -> dict[str, set[str]]:
    """Each module of a top-level package and what it imports."""
    result: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        name = ".".join(parts)
        result[name] = imported_modules(
            path.read_text(encoding="utf-8"), name, is_package=is_package
        )
    return result


def _violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    modules = _modules(package)
    assert len(modules) >= 5, f"found only {sorted(modules)} under {package}/"
    return sorted(
        f"{module} imports {imported}"
        for module, imports in modules.items()
        for imported in imports
        if imported.split(".")[0] in forbidden
    )


def test_services_import_no_ray_fastapi_starlette_or_livekit() -> None:
    assert _violations("services", ("ray", "fastapi", "starlette", "livekit")) == []


def test_services_import_nothing_that_depends_on_them() -> None:
    assert _violations("services", ("deployments", "agent", "loadtest")) == []


def test_the_agent_reaches_the_mesh_only_over_http() -> None:
    # Its own models of the mesh's answers live in agent/mesh_models.py; sharing the services'
    # pydantic models would tie the worker's release to the mesh's.
    assert _violations("agent", ("services", "deployments", "loadtest")) == []


# -- the checker itself ------------------------------------------------------------------------

SAMPLE = '''
"""Talks about ray and fastapi in a docstring; that is not an import."""
# import livekit  (a comment is not one either)
import os, ray.serve
from fastapi import APIRouter
from . import sibling
from ..deployments.api import build
from .. import agent
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from starlette.types import Scope

def later():
    import livekit.agents
    return importlib.import_module("redis.asyncio"), __import__("json")
'''


def test_the_checker_sees_every_kind_of_import_and_ignores_comments_and_docstrings() -> None:
    found = imported_modules(SAMPLE, "services.scheduling.service")
    assert {
        "os",
        "ray.serve",
        "fastapi",
        "services.scheduling",
        "services.scheduling.sibling",
        "services.deployments.api",
        "services.agent",
        "starlette.types",
        "livekit.agents",
        "redis.asyncio",
        "json",
    } <= found
    assert not {"livekit", "ray"} & found  # only what is imported, never what is mentioned
    # In a package's __init__, "." is the package itself.
    assert "agent.flows.appointment" in imported_modules(
        "from .appointment import AppointmentDesk", "agent.flows", is_package=True
    )
    assert "deployments.api" in imported_modules("from ..deployments import api", "agent.worker")
