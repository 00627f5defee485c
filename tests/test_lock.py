"""requirements.lock (the whole resolved environment, installed by .ci/run and the README) agrees with pyproject."""
from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

LOCK = ROOT / "requirements.lock"
COMPILE = "uv pip compile pyproject.toml --extra dev --extra postgres --extra app --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements.lock"


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + sum(project["optional-dependencies"].values(), [])]


def locked(text: str) -> tuple[dict[str, str], set[str]]:
    """({package: pinned version}, {packages the lock says pyproject asked for})."""
    pins, direct, current = {}, set(), None
    for line in text.splitlines():
        if match := re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", line):
            current = canonicalize_name(match[1].split("[")[0])
            pins[current] = match[2]
        elif current and "colorizer (pyproject.toml)" in line:
            direct.add(current)
    return pins, direct


def disagreements(requirements: list[Requirement], text: str) -> list[str]:
    pins, direct = locked(text)
    problems = []
    for req in requirements:
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req} is not in the lock")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req} but the lock pins {pins[name]}")
    problems += [f"the lock still holds {name} for pyproject, which no longer asks for it"
                 for name in sorted(direct - {canonicalize_name(r.name) for r in requirements})]
    return problems


def test_the_lock_pins_every_declared_requirement_within_its_range():
    problems = disagreements(declared(), LOCK.read_text())
    assert not problems, f"pyproject and requirements.lock disagree; regenerate with `{COMPILE}`:\n" + "\n".join(problems)
    assert COMPILE in LOCK.read_text()  # the command above is the one that made the file


def test_a_pin_outside_its_range_a_missing_package_and_a_dropped_one_are_reported():
    text = LOCK.read_text()
    moved = re.sub(r"^keras==\S+", "keras==3.0.0", text, flags=re.M)
    assert disagreements(declared(), moved) == ["keras==3.15.1 but the lock pins 3.0.0"]
    without = re.sub(r"^tqdm==.*\n(    #.*\n)*", "", text, flags=re.M)
    assert disagreements(declared(), without) == ["tqdm>=4.66 is not in the lock"]
    fewer = [r for r in declared() if r.name != "tabulate"]
    assert disagreements(fewer, text) == ["the lock still holds tabulate for pyproject, which no longer asks for it"]
