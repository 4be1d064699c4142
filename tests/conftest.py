"""Fixtures shared by every test: a real IPython shell with the extension, and app folders."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

# fixtures of the container and browser tests (engines, base image, JupyterLab, a page)
pytest_plugins = ("docker_support", "browser_support", "serve_support")

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# The Ctrl-C tests send SIGINT. A shell that starts the suite as a background job without job control (`make
# test &` in a script) ignores SIGINT in it, and then no Python process of the suite raises KeyboardInterrupt:
# give this process, and so every process it starts, Python's usual handler.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_report_header(config):
    """Which scanflow_nb is under test. With SCANFLOW_TEST_INSTALLED=1 (`make test`), it must be the
    installed wheel, never the checkout's source folder."""
    import scanflow_nb

    where = Path(scanflow_nb.__file__).resolve().parent
    source = Path(__file__).resolve().parents[1] / "scanflow_nb"
    if os.environ.get("SCANFLOW_TEST_INSTALLED") and where == source:
        raise pytest.UsageError(f"SCANFLOW_TEST_INSTALLED is set but scanflow_nb comes from the checkout ({where})")
    return f"scanflow_nb {scanflow_nb.__version__} from {where}"


XDIST_GROUPS = {"browser": "browser", "swarm": "swarm", "docker": "docker"}  # marker -> worker group, first match


def worker_group(item) -> str:
    """The pytest-xdist group of a test (--dist loadgroup, pyproject.toml). A file's tests stay on one
    worker, in order (several share module-scoped services and state), and tests sharing a heavy session
    resource stay on one worker too: the browser tests (a Jupyter server and Chromium), the container
    tests (the engine's CPUs and memory), the swarm tests (its one node), the tutorials on the Colab
    install. Containers and swarm are two groups, so the longest group is not both. A test file may
    group its own tests with a module-level `xdist_group(item)`."""
    if own := getattr(getattr(item, "module", None), "xdist_group", None):
        return own(item)
    return next((g for m, g in XDIST_GROUPS.items() if item.get_closest_marker(m)), item.path.name)


def pytest_itemcollected(item):
    """Marked as each test is collected, before any plugin's pytest_collection_modifyitems: pytest-xdist
    reads the mark in its own, and hook order between a conftest and a plugin is not promised."""
    item.add_marker(pytest.mark.xdist_group(worker_group(item)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """Tests that lost their group would spread a file over several workers, and tests sharing a
    module's service would fail at random (pytest 9.2 with pytest-xdist 3.8 drops every group,
    pytest-xdist#1386): stop the run with one line instead."""
    if node.config.getvalue("dist") == "loadgroup" and (lost := [i for i in ids if "@" not in i]):
        pytest.exit(f"{len(lost)} of {len(ids)} tests reached pytest-xdist without their group, e.g. {lost[0]}", 3)


@pytest.fixture
def app_dir(tmp_path):
    return tmp_path / "app"


@pytest.fixture
def shell(app_dir):
    """A real InteractiveShell with `%load_ext scanflow_nb` done and no current app."""
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "scanflow_nb")
    magics = ip.magics_manager.registry["ScanflowMagics"]
    magics.current_app = None
    yield ip
    magics.current_app = None


@pytest.fixture
def run_cell(shell, capsys):
    """Run a cell; return (result, stdout, stderr)."""

    def run(source: str):
        capsys.readouterr()
        result = shell.run_cell(source)
        out = capsys.readouterr()
        return result, out.out, out.err

    return run
