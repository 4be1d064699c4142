"""Attempts forked by a warm starter behave as cold ones do: what the script sees, how it ends, what it
leaves behind; and a starter that dies takes its attempts down with a clear message."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from scanflow_nb import App, Executor, Workflow
from scanflow_nb.errors import TrackerError
from scanflow_nb.resources import Resources
from scanflow_nb.run import starters
from scanflow_nb.run.backend import Launch
from scanflow_nb.run.cgroups import child_groups
from scanflow_nb.run.local import LocalBackend
from scanflow_nb.run.processes import SUBREAPER
from scanflow_nb.track import runs

pytestmark = pytest.mark.skipif(not SUBREAPER, reason="warm starters fork reapers, which need Linux")

LOOK = """\
import json, os, sys
print(json.dumps({"modules": sorted(sys.modules), "main": sorted(globals()), "argv": sys.argv, "path": sys.path,
                  "cwd": os.getcwd(), "name": __name__,
                  "env": os.environ.get("ONLY_HERE"), "fds": sorted(int(f) for f in os.listdir("/proc/self/fd")),
                  "sid": os.getsid(0) == os.getppid(), "stdin": os.path.realpath("/proc/self/fd/0")}))
"""


def launch(app_dir: Path, code: str, resources: Resources | None = None, **env) -> Launch:
    script = app_dir / "step.py"
    script.write_text(textwrap.dedent(code))
    ex = Executor("step", code=code)
    return Launch("w/step", "w", ex, app_dir, script, ["--alpha", "1"], env, 1, resources or Resources())


def run(backend: LocalBackend, spec: Launch, timeout: float = 60):
    handle = backend.launch(spec)
    lines = list(handle.lines())
    return handle, handle.wait(timeout), lines


@pytest.fixture
def warm_backend(tmp_path):
    """A local back end whose starter is ready, so that its first attempt is already forked."""
    backend = LocalBackend()
    env = backend._env({}, launch(tmp_path, "pass"))
    assert starters.STARTERS.get(backend.python, env, wait=True) is not None
    return backend


def test_a_forked_attempt_sees_what_a_cold_one_sees(tmp_path, warm_backend):
    spec = launch(tmp_path, LOOK, ONLY_HERE="yes")
    warm_handle, code, warm_lines = run(warm_backend, spec)
    assert isinstance(warm_handle.process, starters.Started) and code == 0, warm_lines
    cold_handle, code, cold_lines = run(LocalBackend(warm=False), spec)
    assert not isinstance(cold_handle.process, starters.Started) and code == 0, cold_lines
    warm, cold = json.loads(warm_lines[-1]), json.loads(cold_lines[-1])
    extra = set(warm.pop("modules")) - set(cold.pop("modules"))
    assert extra <= {"_socket", "select", "gc", "resource"}  # the starter's own, nothing of scanflow_nb
    assert warm == cold
    assert warm["argv"] == [str(spec.script), "--alpha", "1"] and warm["path"][0] == str(tmp_path)
    assert warm["fds"] == [0, 1, 2, 3] and warm["sid"] and warm["stdin"] == "/dev/null"  # 3: listdir's own


def test_a_forked_attempt_finalizes_fully_and_ends_with_its_own_status(tmp_path, warm_backend):
    code = """\
        import atexit, os, sys, threading, time
        kept = open("kept.txt", "w")
        kept.write("written, never flushed")  # flushed only when the interpreter finalizes
        atexit.register(lambda: print("atexit ran", flush=True))
        def late():
            time.sleep(0.3)
            open("thread.txt", "w").write("joined")
        threading.Thread(target=late).start()  # not a daemon: the interpreter waits for it
        print("before", flush=True)
        sys.exit(7)
        """
    handle, status, lines = run(warm_backend, launch(tmp_path, code))
    assert isinstance(handle.process, starters.Started)
    assert status == 7 and lines == ["before", "atexit ran"]
    assert (tmp_path / "kept.txt").read_text() == "written, never flushed"
    assert (tmp_path / "thread.txt").read_text() == "joined"
    assert handle.usage().cpu_s is not None and handle.usage().cpu_s > 0

    # a module the script imports is finalized too: what it left in an open file's buffer is written
    (tmp_path / "keeper.py").write_text('LOG = open("module.txt", "w")\nLOG.write("from a module, never flushed")\n')
    handle, status, lines = run(warm_backend, launch(tmp_path, "import keeper"))
    assert isinstance(handle.process, starters.Started) and status == 0, lines
    assert (tmp_path / "module.txt").read_text() == "from a module, never flushed"

    handle, status, lines = run(
        warm_backend, launch(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGUSR1)")
    )
    assert status == -signal.SIGUSR1

    handle, status, lines = run(warm_backend, launch(tmp_path, "import sys\nsys.exit('stopped: no data')"))
    assert status == 1 and lines == ["stopped: no data"]  # as Python ends on a SystemExit with a message

    handle, status, lines = run(warm_backend, launch(tmp_path, "def f():\n    raise ValueError('boom')\nf()\n"))
    assert status == 1 and lines[0] == "Traceback (most recent call last):" and lines[-1] == "ValueError: boom"
    assert all("reaper.py" not in line for line in lines), lines  # the traceback starts in the script


def test_a_timeout_stops_the_whole_forked_tree_escapes_included(tmp_path, warm_backend):
    code = """\
        import os, subprocess, time
        escaped = subprocess.Popen(["sleep", "300"], start_new_session=True)
        print(os.getpid(), escaped.pid, flush=True)
        time.sleep(300)
        """
    handle = warm_backend.launch(launch(tmp_path, code))
    lines = handle.lines()
    pids = [int(p) for p in next(lines).split()]
    handle.kill()
    assert handle.wait(30) == -signal.SIGTERM
    list(lines)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def test_when_the_starter_dies_its_attempts_fail_clearly_and_nothing_is_left_running(tmp_path):
    backend = LocalBackend()
    spec = launch(
        tmp_path,
        "import os, subprocess, time\nsub = subprocess.Popen(['sleep', '300'])\n"
        "print(os.getpid(), sub.pid, flush=True)\ntime.sleep(300)\n",
    )
    starter = starters.STARTERS.get(backend.python, backend._env(spec.env, spec), wait=True)
    handle = backend.launch(spec)
    assert isinstance(handle.process, starters.Started)
    lines = handle.lines()
    pids = [int(p) for p in next(lines).split()]
    os.kill(starter.pid, signal.SIGKILL)
    rest = list(lines)
    assert handle.wait(30) != 0
    assert rest[-1] == starters.LOST
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)
    # the next attempt gets a new starter (or starts cold meanwhile) and succeeds
    _, status, out = run(backend, launch(tmp_path, "print('again')"))
    assert status == 0 and out == ["again"]
    assert starters.STARTERS.get(backend.python, backend._env(spec.env, spec), wait=True).pid != starter.pid


KERNEL = """\
import os, sys, time
from pathlib import Path
from scanflow_nb.run import starters
from scanflow_nb.run.backend import Launch
from scanflow_nb import Executor
from scanflow_nb.run.local import LocalBackend
app = Path(sys.argv[1])
backend = LocalBackend()
spec = Launch("w/s", "w", Executor("s", file="s.py"), app, app / "s.py", [], {}, 1)
assert starters.STARTERS.get(backend.python, backend._env({}, spec), wait=True) is not None
handle = backend.launch(spec)
assert isinstance(handle.process, starters.Started)
for line in handle.lines():
    print(line, flush=True)
"""


def test_when_the_kernel_dies_its_starter_and_every_attempt_end(tmp_path):
    import subprocess

    (tmp_path / "s.py").write_text(
        "import os, subprocess, time\nsub = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "print(os.getpid(), sub.pid, flush=True)\ntime.sleep(300)\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    kernel = subprocess.Popen([sys.executable, "-c", KERNEL, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pids = [int(p) for p in kernel.stdout.readline().split()]
        assert len(pids) == 2
        kernel.kill()
        kernel.wait(30)
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in pids)
    finally:
        kernel.kill()
        kernel.stdout.close()


def test_attempts_start_cold_where_a_starter_would_differ(tmp_path, warm_backend):
    # an interpreter setting the starter did not start with
    handle, status, lines = run(
        warm_backend, launch(tmp_path, "import sys\nprint(sys.flags.optimize)", PYTHONOPTIMIZE="1")
    )
    assert status == 0 and lines == ["1"]
    # a sitecustomize on the PYTHONPATH runs at interpreter start
    (tmp_path / "sitecustomize.py").write_text("import builtins\nbuiltins.CUSTOMIZED = True\n")
    handle, status, lines = run(warm_backend, launch(tmp_path, "print(CUSTOMIZED)"))
    assert not isinstance(handle.process, starters.Started) and status == 0 and lines == ["True"]


def test_a_forked_attempt_over_its_memory_limit_is_stopped_by_its_own_cgroup(tmp_path, warm_backend, monkeypatch):
    groups = child_groups(os.environ.get("SCANFLOW_CGROUP"))
    if groups is None:
        pytest.skip("no cgroup v2 group may be made here (the watchdog path is covered by test_resources)")
    hog = "x = bytearray(600 * 2**20)\nprint('survived')\n"
    handle, status, lines = run(warm_backend, launch(tmp_path, hog, Resources(memory=256 * 2**20)))
    assert isinstance(handle.process, starters.Started)
    assert status == -signal.SIGKILL and "survived" not in lines and handle.usage().killed_for_memory


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


SEES_RUN = """\
import os, subprocess, sys
print(os.environ["MLFLOW_RUN_ID"], flush=True)
subprocess.run([sys.executable, "-c", "import os; print(os.environ['MLFLOW_RUN_ID'])"], check=True)
open("ran.txt", "w").close()
"""


def test_an_attempt_forked_before_its_run_exists_starts_its_code_with_the_run_ids(tmp_path, warm_backend):
    """The attempt is forked while the store creates its run; its code, and what it starts, see the
    ids; when there is no run to be had, nothing of it runs and the back end says why."""

    def slow_store():
        time.sleep(0.3)
        return {"MLFLOW_RUN_ID": "abc123"}

    spec = replace(launch(tmp_path, SEES_RUN), late_env=slow_store)
    handle, status, lines = run(warm_backend, spec)
    assert isinstance(handle.process, starters.Started) and status == 0 and lines == ["abc123", "abc123"]
    handle, status, lines = run(LocalBackend(warm=False), spec)  # a cold start gets them as it starts
    assert not isinstance(handle.process, starters.Started) and status == 0 and lines == ["abc123", "abc123"]

    def no_store():
        raise TrackerError("the store is down")

    (tmp_path / "ran.txt").unlink()
    with pytest.raises(TrackerError, match="the store is down"):
        warm_backend.launch(replace(spec, late_env=no_store))
    time.sleep(0.5)
    assert not (tmp_path / "ran.txt").exists()
    handle, status, lines = run(warm_backend, spec)  # the starter serves the next attempt as before
    assert isinstance(handle.process, starters.Started) and status == 0 and lines == ["abc123", "abc123"]


def test_an_executor_whose_run_cannot_be_created_does_not_run(tmp_path, monkeypatch):
    """The engine starts a warm attempt before its MLflow run exists: if the store refuses the run,
    the executor is failed as not started and its code never runs; the rest of the run goes on."""
    create = runs.RunWriter._create

    def refuse_executor_runs(writer, ref):
        if ref.name != "refused":
            return create(writer, ref)
        ref._resolve(None, "the store refused it")
        writer._failed(ref.label, "run not created: the store refused it")

    monkeypatch.setattr(runs.RunWriter, "_create", refuse_executor_runs)
    app = App(tmp_path / "app")
    app.path.mkdir(parents=True, exist_ok=True)
    (app.path / "refused.py").write_text(SEES_RUN)
    (app.path / "fine.py").write_text("print('fine')\n")
    app.add(
        Workflow(
            "w", parallel=True, executors=[Executor("refused", file="refused.py"), Executor("fine", file="fine.py")]
        )
    )
    result = app.run("w", echo=False)
    refused = result.executors["w/refused"]
    assert refused.status == "failed" and refused.attempts == 0, refused
    assert refused.error == "not started: the MLflow run of w/refused could not be created: the store refused it"
    assert result.executors["w/fine"].status == "succeeded"
    assert not (app.path / "ran.txt").exists() and not app.log_path("w/refused").exists()
