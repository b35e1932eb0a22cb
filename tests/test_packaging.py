"""What pyproject.toml promises installs: the pinned set fits its ranges, and setup.sh checks
the Python version before it creates or installs anything."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from tests.conftest import ROOT


def pinned() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "launch" / "constraints.txt").read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", line):
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def test_the_pinned_versions_satisfy_pyproject_and_requires_python_is_true() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = pinned()
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{name} is not pinned in launch/constraints.txt"
        assert requirement.specifier.contains(pins[name]), (line, pins[name])
    requires = SpecifierSet(project["requires-python"])
    assert requires.contains("3.11") and not requires.contains("3.10")  # numpy 2.4: 3.11+
    assert requires.contains(f"{sys.version_info.major}.{sys.version_info.minor}")
    # The code's own needs: DataLoader(in_order=) came in torch 2.6.
    torch_range = next(
        Requirement(d).specifier for d in project["dependencies"] if d.startswith("torch>")
    )
    assert not torch_range.contains("2.5.1") and torch_range.contains("2.6.0")


def run_setup(tmp_path: Path, python: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHON": python, "GANDIST_VENV": str(tmp_path / "venv")}
    return subprocess.run(
        ["bash", str(ROOT / "launch" / "setup.sh")], env=env, capture_output=True, text=True
    )


def test_setup_refuses_an_old_or_missing_python_in_one_line_before_anything(tmp_path: Path) -> None:
    old = tmp_path / "python3.10"
    old.write_text('#!/bin/sh\n[ "$1" = -c ] && echo 3.10 && exit 0\necho "Python 3.10.12"\n')
    old.chmod(0o755)
    for python, says in (
        (str(old), "is 3.10"),
        (str(tmp_path / "nope"), "is not a working Python"),
    ):
        done = run_setup(tmp_path, python)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "gandist needs Python >= 3.11" in lines[0] and says in lines[0]
        assert "PYTHON=python3.11" in lines[0] and done.stdout == ""
        assert not (tmp_path / "venv").exists()
