"""What users install: the sdist and the wheel hold every module and data file, their metadata passes
twine's checks, and the version has one source."""

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """sdist, then the wheel built from it, from a copy of the checkout's files (the checkout stays clean)."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:
        pytest.skip("needs the checkout as a git repository to know its files")
    source = tmp_path_factory.mktemp("source")
    for name in listed.stdout.splitlines():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    out = source / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return out


def test_the_wheel_holds_every_file_of_the_package(dist):
    """A folder without __init__.py, or a data file (an ES module) without package_data, would be missing."""
    wheel = next(dist.glob("scanflow_nb-*.whl"))
    inside = set(zipfile.ZipFile(wheel).namelist())
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard", "scanflow_nb"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert listed, "no package files found"
    assert sorted(set(listed) - inside) == []
    entry_points = next(n for n in inside if n.endswith("entry_points.txt"))
    assert "scanflow = scanflow_nb.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_metadata_passes_twine_check(dist):
    files = sorted(str(p) for p in dist.iterdir())
    assert any(f.endswith(".tar.gz") for f in files) and any(f.endswith(".whl") for f in files)
    check = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *files], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_version_has_one_source(dist):
    """setup.cfg reads it from scanflow_nb.__version__; the wheel's metadata carries it."""
    import ast

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["metadata"]["version"] == "attr: scanflow_nb.__version__"
    tree = ast.parse((ROOT / "scanflow_nb" / "__init__.py").read_text())
    declared = next(
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets)
    )
    wheel = next(dist.glob("scanflow_nb-*.whl"))
    assert wheel.name.startswith(f"scanflow_nb-{declared}-")
    metadata = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("METADATA"))
    assert f"\nVersion: {declared}\n" in zipfile.ZipFile(wheel).read(metadata).decode()
