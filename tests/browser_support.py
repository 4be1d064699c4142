"""End-to-end notebook tests: a real JupyterLab 4 or Jupyter Notebook 7 driven by headless Chromium (Playwright).

The fixtures reach every test module (tests/conftest.py loads this module as a plugin); mark the module::

    from browser_support import open_notebook, run_cell
    pytestmark = pytest.mark.browser

    def test_something(lab, page):
        open_notebook(page, lab, "demo.ipynb")
        cell = run_cell(page, "print(6 * 7)")
        expect(cell).to_contain_text("42")

`lab` starts the front end named by the `front_end` fixture (parametrized: "lab" for JupyterLab,
"notebook" for Notebook 7; both serve the same notebook UI components) on a free port in a temporary
root folder (a token, no browser, the news and update pop-ups switched off through temporary user
settings); `page` is a Chromium page at a desktop size. Both stop completely at the end. Everything
missing (the `chromium` binary, jupyterlab, notebook, playwright) makes the tests skip with a reason
that says what to install. Chromium is Debian's (`apt-get install chromium`), never a
`playwright install` download. Tests wait for the state they assert with Playwright's `expect`
(auto-retrying, with a timeout), never read it once: CI runs on a busy 2-core machine.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import pytest

try:
    from playwright.sync_api import expect  # auto-retrying assertions: wait for a state, with a timeout
except ImportError:  # the fixtures skip every browser test then
    expect = None

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
USER_SETTINGS = {  # no news or update pop-ups; widget state saved with the notebook (as users who share them set)
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"checkForUpdates": False, "fetchNews": "false"},
    "@jupyter-widgets/jupyterlab-manager/plugin.jupyterlab-settings": {"saveState": True},
}
VIEWPORT = {"width": 1400, "height": 1000}
BUSY_MS = 60_000  # what a page action or an `expect` waits at most
DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
FRONT_ENDS = {"lab": ("jupyterlab", "lab/tree"), "notebook": ("notebook", "notebooks")}  # module, notebook URL


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing_reason(front_end: str = "lab") -> str | None:
    """Why browser tests cannot run here, or None if they can."""
    if chromium_path() is None:
        return "no chromium binary (install it: apt-get install chromium)"
    for module, extra in ((FRONT_ENDS[front_end][0], FRONT_ENDS[front_end][0]), ("playwright", "playwright")):
        if find_spec(module) is None:
            return f"{extra} is not installed (pip install -e '.[browser]')"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Lab:
    """A running JupyterLab or Notebook 7 server."""

    front_end: str  # "lab" or "notebook"
    url: str
    token: str
    root: Path
    process: subprocess.Popen
    log: Path

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        """Call the Jupyter server REST API (e.g. "PUT", "api/contents/x.ipynb")."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
        return json.loads(text) if text else {}

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server, its kernels and anything they started (one process group)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def start_lab(root: Path, timeout: float = 90, front_end: str = "lab") -> Lab:
    """Start JupyterLab ("lab") or Notebook 7 ("notebook") serving `root`; returns once its API answers."""
    root = Path(root)
    home = root.parent / f"{root.name}-jupyter"
    settings = home / "lab-settings"
    for name, values in USER_SETTINGS.items():
        target = settings / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    root.mkdir(parents=True, exist_ok=True)
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "ws"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
    }
    log = home / "jupyterlab.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                FRONT_ENDS[front_end][0],
                "--no-browser",
                "--ip=127.0.0.1",
                f"--port={port}",
                f"--ServerApp.root_dir={root}",
                f"--IdentityProvider.token={token}",
                "--allow-root",
                "--ServerApp.open_browser=False",
                f"--{'LabApp' if front_end == 'lab' else 'JupyterNotebookApp'}.expose_app_in_browser=True",
            ],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    lab = Lab(front_end, f"http://127.0.0.1:{port}", token, root, process, log)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{front_end} exited with code {process.returncode}:\n{lab.log_tail()}")
        try:
            lab.api("GET", "api/status")
            return lab
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                lab.stop()
                raise RuntimeError(f"{front_end} did not answer within {timeout} s:\n{lab.log_tail()}") from None
            time.sleep(0.3)


def create_notebook(lab: Lab, name: str, sources: list[str] = ()) -> None:
    """Write a notebook (Python 3 kernel, optional code cells) into the lab's root folder."""
    cells = [
        {"cell_type": "code", "source": src, "metadata": {}, "outputs": [], "execution_count": None} for src in sources
    ]
    content = {
        "cells": cells,
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
    }
    lab.api("PUT", f"api/contents/{name}", {"type": "notebook", "format": "json", "content": content})


LOAD_ATTEMPTS = 3
PAGE_STATE = """() => {
    const failed = document.querySelector('.jp-Dialog[aria-label^="Error Loading Theme"]');
    if (failed) return failed.getAttribute("aria-label");
    const themed = document.body.dataset.jpThemeName;
    return themed && document.querySelector(".jp-NotebookPanel .jp-Cell") ? "ready" : false;
}"""


def open_notebook(page, lab: Lab, name: str, timeout: float = 90) -> None:
    """Create `name` if needed, open it in the page and wait until its kernel is idle."""
    try:
        lab.api("GET", f"api/contents/{name}?content=0")
    except urllib.error.HTTPError:
        create_notebook(lab, name)
    page.goto(f"{lab.url}/{FRONT_ENDS[lab.front_end][1]}/{name}?token={lab.token}")
    for attempt in range(LOAD_ATTEMPTS):
        state = page.wait_for_function(PAGE_STATE, timeout=timeout * 1000).json_value()
        if state == "ready":
            break
        # A stylesheet request that failed on a busy machine leaves a modal dialog over the page: load it again.
        if attempt == LOAD_ATTEMPTS - 1:
            raise RuntimeError(f"the page kept failing to load ({state}):\n{lab.log_tail()}")
        page.reload()
    wait_for_kernel_idle(page, timeout)


def wait_for_kernel_idle(page, timeout: float = 90) -> None:
    """Wait until the notebook's kernel is connected and idle (cells run before that are silently dropped).

    Asks the application itself (both front ends are started with `expose_app_in_browser`).
    """
    page.wait_for_function(
        """() => {
            const kernel = window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel;
            return kernel?.connectionStatus === "connected" && kernel?.status === "idle";
        }""",
        timeout=timeout * 1000,
    )


def run_cell(page, code: str, timeout: float = 120, wait: bool = True):
    """Type `code` into the notebook's last cell and run it; returns that cell.

    With `wait` (the default) it returns once the cell has finished (see `wait_for_cell`).
    Typing goes through `insert_text`, so the editor adds no brackets or indentation of its own.
    """
    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")
    index = cells.count() - 1
    cell = cells.nth(index)
    editor = cell.locator(".cm-content")
    if editor.inner_text().strip():  # the last cell is used: add a new one below it
        editor.click()
        page.keyboard.press("Escape")
        page.keyboard.press("b")
        index += 1
        cell = cells.nth(index)
        editor = cell.locator(".cm-content")
    editor.click()
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")
    if wait:
        wait_for_cell(page, cell, timeout)
    return cell


def wait_for_kernel_output(page, code: str, text: str, timeout: float = 60) -> None:
    """Run `code` in new cells until one prints `text`.

    A widget change made in the page reaches the kernel when ipywidgets' throttle lets it go: while an earlier
    update still waits for the kernel, the next one is held back, and a cell run meanwhile sees the old value.
    """
    outputs = []

    def printed() -> bool:
        outputs.append(run_cell(page, code).locator(".jp-OutputArea-output").inner_text())
        return outputs[-1].strip() == text.strip()

    try:
        eventually(printed, timeout, f"{code!r} printing {text!r}")
    except TimeoutError as error:
        raise AssertionError(f"{error}; it printed {outputs}") from None


def wait_for_cell(page, cell, timeout: float = 120) -> None:
    """Wait until a cell's prompt shows its execution count ("[3]:" rather than "[*]:" or "[ ]:")."""
    from playwright.sync_api import expect

    expect(cell.locator(".jp-InputArea-prompt")).to_have_text(re.compile(r"^\s*\[\d+\]:\s*$"), timeout=timeout * 1000)


def eventually(check, timeout: float = 60, what: str = "the condition"):
    """Call `check` until it returns something truthy (returned), for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not hold within {timeout} s")
        time.sleep(0.2)
    return value


def wait_for_text(locator, text: str, timeout: float = 60) -> None:
    """Wait until `text` appears inside a page or a locator."""
    locator.get_by_text(text).first.wait_for(timeout=timeout * 1000)


def screenshot(target, path: str | os.PathLike) -> Path:
    """Save a PNG of a page or an element."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    target.screenshot(path=str(path))
    return path


def docs_screenshot(target, lab: Lab, folder: Path, name: str) -> Path:
    """A screenshot into `folder`; with SCANFLOW_UPDATE_DOCS_IMAGES=1, JupyterLab's also into docs/images/."""
    shot = screenshot(target, Path(folder) / name)
    if os.environ.get("SCANFLOW_UPDATE_DOCS_IMAGES") == "1" and lab.front_end == "lab":
        shutil.copyfile(shot, DOCS_IMAGES / name)
    return shot


@pytest.fixture(params=["lab", "notebook"], ids=["jupyterlab4", "notebook7"])
def front_end(request) -> str:
    """Each browser test runs in JupyterLab 4 and in Jupyter Notebook 7."""
    return request.param


@pytest.fixture
def lab(tmp_path, front_end):
    """A JupyterLab or Notebook 7 server on a free port serving tmp_path/"root"; stopped after the test."""
    reason = missing_reason(front_end)
    if reason:
        pytest.skip(f"browser test skipped: {reason}")
    server = start_lab(tmp_path / "root", front_end=front_end)
    yield server
    server.stop()


@pytest.fixture
def page(lab):
    """A headless Chromium page (Debian's chromium, driven by Playwright)."""
    from playwright.sync_api import expect, sync_playwright

    # a busy 2-core machine: an action, and an `expect` without a timeout of its own, wait up to 60 s
    # (Playwright's 5 s for `expect` failed a reopened notebook's widget, restored from its saved state)
    expect.set_options(timeout=BUSY_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(BUSY_MS)
            yield page
        finally:
            browser.close()
