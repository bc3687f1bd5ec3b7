"""requirements.lock and pyproject's ranges agree: every declared dependency is locked at a version its range allows."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK_LINE = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s\\;]+)")
# The platform the lock was compiled for (Makefile `lock`): markers are evaluated there, not on the test machine.
LOCK_ENV = {
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "sys_platform": "linux",
    "python_version": "3.11",
}


def _locked() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        if m := LOCK_LINE.match(line):
            pins[canonicalize_name(m.group(1))] = Version(m.group(2))
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return [r for r in reqs if canonicalize_name(r.name) != "mmsearch"]


def test_lock_pins_every_package_with_hashes():
    text = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    entries = [line for line in text.splitlines() if LOCK_LINE.match(line)]
    assert len(entries) > 50
    assert all(line.rstrip().endswith("\\") for line in entries), "every pin must carry --hash lines"


@pytest.mark.parametrize("req", _declared(), ids=str)
def test_declared_range_admits_the_locked_version(req):
    if req.marker is not None and not req.marker.evaluate(LOCK_ENV):
        pytest.skip(f"{req.name} is not used on the lock's platform")
    locked = _locked()
    name = canonicalize_name(req.name)
    assert name in locked, (
        f"{req.name} is declared in pyproject.toml but missing from requirements.lock (run make lock)"
    )
    assert req.specifier.contains(locked[name], prereleases=True), (
        f"{req.name}: pyproject says {req.specifier}, the lock has {locked[name]} (run make lock)"
    )


def test_torch_is_the_cpu_build():
    assert str(_locked()["torch"]).endswith("+cpu")
