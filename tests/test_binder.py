"""The Binder set-up stays in step with setup.cfg: same requirements, the extras the tutorials install, dot, Python."""

from __future__ import annotations

import configparser
import os
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import nbformat
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
BINDER_EXTRAS = ("active", "tensorflow", "docker", "optuna")


def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def requirements(lines: str) -> dict[str, str]:
    """{canonical name: specifier} of requirement lines (comments and blank lines skipped)."""
    found = {}
    for line in lines.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            assert canonicalize_name(req.name) not in found, f"{req.name} listed twice"
            found[canonicalize_name(req.name)] = str(req.specifier)
    return found


def package_requirements(extras) -> dict[str, str]:
    config = setup_cfg()
    lines = config["options"]["install_requires"]
    for extra in extras:
        assert extra in config["options.extras_require"], f"setup.cfg has no extra {extra!r}"
        lines += "\n" + config["options.extras_require"][extra]
    return requirements(lines)


def test_binder_requirements_are_the_package_requirements_and_its_tutorial_extras():
    binder = requirements((BINDER / "requirements.txt").read_text())
    assert binder == package_requirements(BINDER_EXTRAS)


def test_every_extra_a_tutorial_installs_in_colab_is_on_binder():
    used = set()
    for path in sorted((ROOT / "tutorials").glob("*.ipynb")):
        setup = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code").source
        extras = re.search(r'"scanflow_nb\[([\w,]+)\] @ git\+\$REPOSITORY"', setup)
        assert extras, f"{path.name}: the Colab cell installs scanflow_nb[extras] from the repository"
        used |= set(extras.group(1).split(","))
    assert used and used <= set(BINDER_EXTRAS), f"tutorials install extras {sorted(used)}; Binder has {BINDER_EXTRAS}"


def test_the_environment_measured_here_satisfies_binder_requirements():
    for name, spec in requirements((BINDER / "requirements.txt").read_text()).items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            raise AssertionError(f"{name} from binder/requirements.txt is not installed here") from None
        assert SpecifierSet(spec).contains(installed, prereleases=True), f"{name} {installed} does not satisfy {spec!r}"


def test_dot_python_version_and_the_package_install():
    apt = [
        line.strip()
        for line in (BINDER / "apt.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert "graphviz" in apt
    runtime = (BINDER / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.\d+", runtime)
    assert SpecifierSet(setup_cfg()["options"]["python_requires"]).contains(runtime.removeprefix("python-"))
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK), "repo2docker runs postBuild only when it is executable"
    script = post_build.read_text()
    assert script.startswith("#!/bin/bash\n") and "set -euo pipefail" in script
    assert "python -m pip install --no-deps ." in script and "--editable" not in script, (
        "Binder gets what users install"
    )
