"""The widgets' front end (ES modules and styles) ships inside the wheel: nothing is fetched from a CDN."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REMOTE_IMPORT = re.compile(r"""(from\s+|import\s*\(?\s*)["']https?://""")


@pytest.mark.slow
def test_the_wheel_carries_every_es_module_and_style_of_the_widgets(tmp_path):
    source = tmp_path / "src"  # a copy, so the build leaves nothing in the repository
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.rst", "MANIFEST.in"):
        shutil.copy(ROOT / name, source)
    shutil.copytree(ROOT / "scanflow_nb", source / "scanflow_nb", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("scanflow_nb-*.whl")
    archive = zipfile.ZipFile(wheel)
    front_end = {p.relative_to(ROOT).as_posix() for p in (ROOT / "scanflow_nb" / "widgets").glob("*.[jc]s*")}
    assert front_end >= {"scanflow_nb/widgets/graph.js", "scanflow_nb/widgets/graph.css"}
    assert front_end <= set(archive.namelist()), (
        f"missing from the wheel: {sorted(front_end - set(archive.namelist()))}"
    )
    for name in front_end:
        assert not REMOTE_IMPORT.search(archive.read(name).decode()), f"{name} loads code from the network"
