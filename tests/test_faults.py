"""Fault injection: the faults a notebook user meets every week, each reproduced and its outcome asserted.

Nothing is mocked: real subprocess trees checked with `ps`, real kernels (processes) sharing one
app folder, a real MLflow store deleted or damaged under a live kernel, an executor printing
200 MB while the kernel's memory is measured.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from docker_support import new_app

from scanflow_nb import Executor, Workflow


def wait_for(condition, timeout: float, what: str):
    """Poll `condition` until it is truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def survivors(token: str) -> list[str]:
    """Processes whose command line carries `token`, as `ps` lists them (zombies included)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid,stat,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines()[1:] if token in line and "ps -eo" not in line]


def stubborn_tree(token: str) -> str:
    """Executor code: a child that ignores SIGTERM, and a grandchild that left the session and its parent."""
    ignore = f"import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)  # {token}"
    escape = (
        "import os, subprocess, sys; os.setsid(); "
        f"subprocess.Popen([sys.executable, '-c', {ignore!r}]); os._exit(0)  # {token}"
    )
    return textwrap.dedent(f"""\
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", {ignore!r}])
        subprocess.Popen([sys.executable, "-c", {escape!r}]).wait()
        print("started", flush=True)
        time.sleep(600)
    """)


# -- 1. process trees end with their executor --------------------------------------------------------
def test_a_timeout_ends_the_whole_tree_and_does_not_wait_on_its_pipe(app_dir):
    token = f"scanflow-fault-{uuid.uuid4().hex}"
    app = new_app(app_dir, Workflow("w", executors=[Executor("stuck", code=stubborn_tree(token), timeout=3)]))
    seen = []
    record = lambda event: event.line == "started" and seen.append(len(survivors(token)))
    result = app.run("w", backend_options={"grace": 1.0}, echo=False, listeners=[record])
    r = result.executors["w/stuck"]
    assert (r.status, r.error) == ("failed", "timed out after 3 s")
    assert seen == [2], "both stubborn processes were running before the timeout"
    assert "started" in app.logs("stuck")
    wait_for(lambda: not survivors(token), 5, f"no process left running, got {survivors(token)}")
    assert r.duration < 3 + 1 + 6, f"the attempt took {r.duration:.1f} s: it waited on a pipe held by a stopped tree"


def test_processes_an_executor_leaves_running_are_stopped_and_named_in_its_log(app_dir):
    token = f"scanflow-fault-{uuid.uuid4().hex}"
    daemon = f"import os, time; os.setsid(); time.sleep(600)  # {token}"
    code = f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {daemon!r}])\nprint('bye')\n"
    app = new_app(app_dir, Workflow("w", executors=[Executor("leaky", code=code)]))
    result = app.run("w", echo=False)
    assert result.ok, result.summary()
    log = app.logs("leaky")
    assert "bye" in log and "[scanflow] the executor left 1 process(es) running; stopping them" in log
    wait_for(lambda: not survivors(token), 5, f"the daemon to be stopped, got {survivors(token)}")


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["interrupted", "killed"])
def test_a_kernel_interrupted_or_killed_leaves_no_executor_process(tmp_path, how):
    """A real kernel-like process runs a workflow; Ctrl-C (SIGINT) or kill -9 of that process ends every tree."""
    token = f"scanflow-fault-{uuid.uuid4().hex}"
    code = stubborn_tree(token).replace('print("started"', 'open("up", "w").close(); print("started"')
    driver = tmp_path / "kernel.py"
    driver.write_text(
        textwrap.dedent(f"""\
        from scanflow_nb import App, Executor, Workflow
        app = App({str(tmp_path / "app")!r})
        app.add(Workflow("w", parallel=True, executors=[Executor(n, code={code!r}) for n in "ab"]))
        try:
            app.run("w", echo=False, backend_options={{"grace": 1.0}})
        except KeyboardInterrupt:
            print("INTERRUPTED", app.status("w")["w"].status, flush=True)
        """)
    )
    kernel = subprocess.Popen([sys.executable, str(driver)], stdout=subprocess.PIPE, text=True)
    wait_for(lambda: (tmp_path / "app" / "up").exists() and len(survivors(token)) >= 4, 120, "both executors' trees")
    kernel.send_signal(how)
    out, _ = kernel.communicate(timeout=60)
    if how == signal.SIGINT:
        assert "INTERRUPTED interrupted" in out
    wait_for(lambda: not survivors(token), 15, f"no process left running, got {survivors(token)}")


@pytest.mark.docker
def test_a_container_timeout_sends_sigterm_first_then_ends_the_container(app_dir, docker_backend):
    from scanflow_nb.run.docker import leftovers

    ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    code = textwrap.dedent(f"""\
        import signal, subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", {ignore!r}])
        def bye(*_):
            print("got SIGTERM", flush=True)
            time.sleep(600)  # and does not leave: SIGKILL ends it after the grace period
        signal.signal(signal.SIGTERM, bye)
        print("up", flush=True)
        time.sleep(600)
    """)
    app = new_app(app_dir, Workflow("w", executors=[Executor("slow", code=code, timeout=10)]))
    result = app.run("w", backend=docker_backend(), echo=False)
    r = result.executors["w/slow"]
    assert r.error == "timed out after 10 s" and r.duration < 10 + 3 + 10
    assert "got SIGTERM" in app.logs("slow")
    assert leftovers(app.path) == []
