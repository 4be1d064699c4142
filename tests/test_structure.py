"""The layout stays what docs/architecture.md says: layers, no import cycles, lint and format clean."""

import graphlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed: pip install '.[test]'")
    return found


def test_layers_hold(tmp_path):
    """import-linter's layers contract in pyproject.toml: front doors -> core model -> back ends."""
    out = subprocess.run([tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


@pytest.mark.parametrize("level", ["module", "package"])
def test_no_import_cycles(level):
    """Imports inside functions count: grimp reads every import statement."""
    import grimp

    graph = grimp.build_graph("scanflow_nb")

    def unit(module: str) -> str:
        return module if level == "module" else ".".join(module.split(".")[:2])

    deps: dict[str, set[str]] = {}
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if unit(module) != unit(imported) and not (level == "package" and unit(module) == "scanflow_nb"):
                deps.setdefault(unit(module), set()).add(unit(imported))
    try:
        graphlib.TopologicalSorter(deps).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle between {level}s: {' -> '.join(exc.args[1])}")


def test_every_source_folder_is_a_package():
    """A folder without __init__.py is silently left out of the wheel."""
    missing = [
        str(folder.relative_to(ROOT))
        for folder in (ROOT / "scanflow_nb").rglob("*")
        if folder.is_dir()
        and folder.name != "__pycache__"
        and any(folder.glob("*.py"))
        and not (folder / "__init__.py").is_file()
    ]
    assert missing == []


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff(command):
    out = subprocess.run([tool("ruff"), *command], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_readme_renders_on_pypi():
    """README.rst is the package's long description: PyPI refuses markup errors (twine check --strict)."""
    import io

    from readme_renderer.rst import render

    warnings = io.StringIO()
    assert render((ROOT / "README.rst").read_text(), stream=warnings) is not None, warnings.getvalue()
