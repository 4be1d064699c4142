"""Fault injection: the faults a notebook user meets every week, each reproduced and its outcome asserted.

Nothing is mocked: real subprocess trees checked with `ps`, real kernels (processes) sharing one
app folder, a real MLflow store deleted or damaged under a live kernel, an executor printing
200 MB while the kernel's memory is measured.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import yaml
from docker_support import new_app

from scanflow_nb import App, Executor, Workflow
from scanflow_nb.errors import ConflictError
from scanflow_nb.run.output import tail_lines


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
    assert r.error == "timed out after 10 s" and r.duration < 300  # SIGKILL after the grace, not the 600 s sleep
    assert "got SIGTERM" in app.logs("slow")
    assert leftovers(app.path) == []


# -- 2. declarations are never lost ----------------------------------------------------------------
KERNEL = """\
import sys, time
from pathlib import Path
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "scanflow_nb")
who, app, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
ip.run_line_magic("scanflow", f"app {app}")
while not go.exists():
    time.sleep(0.01)
for i in range(20):
    result = ip.run_cell(f"%%scanflow executor {who}{i} -w w --param i={i}\\nprint({i})\\n")
    assert result.success, result.error_in_exec
"""


def test_two_kernels_declaring_at_once_lose_nothing(tmp_path, run_cell, app_dir):
    run_cell(f"%scanflow app {app_dir}")
    run_cell("%scanflow workflow w")
    (tmp_path / "kernel.py").write_text(KERNEL)
    go = tmp_path / "go"
    kernels = [
        subprocess.Popen([sys.executable, str(tmp_path / "kernel.py"), who, str(app_dir), str(go)]) for who in "ab"
    ]
    time.sleep(1)
    go.touch()
    assert [k.wait(300) for k in kernels] == [0, 0]
    saved = yaml.safe_load((app_dir / "scanflow.yaml").read_text())
    names = sorted(ex["name"] for ex in saved["workflows"][0]["executors"])
    assert names == sorted(f"{who}{i}" for who in "ab" for i in range(20))
    _, out, _ = run_cell("%%scanflow executor mine -w w\nprint('mine')")  # this kernel read the file before them
    assert "kept from it" in out and "executor w/a0" in out
    assert len(App(app_dir).find("w").executors) == 41


def test_a_hand_edit_is_merged_and_a_broken_file_is_never_overwritten(run_cell, app_dir):
    run_cell(f"%scanflow app {app_dir}")
    run_cell("%scanflow workflow w")
    run_cell("%%scanflow executor a -w w\nprint('a')")
    config = app_dir / "scanflow.yaml"
    edited = yaml.safe_load(config.read_text())
    edited["workflows"][0]["executors"].append({"name": "by_hand", "code": "print('typed in an editor')"})
    edited["workflows"].append({"name": "other", "parallel": True})
    config.write_text(yaml.safe_dump(edited, sort_keys=False))
    _, out, _ = run_cell("%%scanflow executor b -w w\nprint('b')")
    assert "note: scanflow.yaml had changed on disk; kept from it:" in out
    app = App(app_dir)
    assert [ex.name for ex in app.find("w").executors] == ["a", "by_hand", "b"]
    assert app.find("other").parallel

    broken = config.read_text().replace("name: other", "name: [other")  # an unclosed bracket
    config.write_text(broken)
    result, out, err = run_cell("%%scanflow executor c -w w\nprint('c')")
    assert not result.success and "Traceback" not in out + err
    assert err.count("\n") == 1 and "scanflow.yaml is not valid YAML (line" in err
    assert config.read_text() == broken, "the user's file was overwritten"
    assert not (app_dir / "w" / "c.py").exists(), "the executor's file was written although nothing was declared"


def test_a_change_made_on_both_sides_is_a_conflict_and_nothing_is_written(app_dir):
    app = App(app_dir, [Workflow("w", executors=[Executor("a", code="print(1)")])])
    app.save()
    other = App(app_dir)  # another kernel
    other.find("w").parallel = True
    other.save()
    app.find("w").executors[0].retries = 2  # a different entry: merged with the other kernel's change
    app.save()
    merged = App(app_dir).find("w")
    assert merged.parallel and merged.executors[0].retries == 2
    assert app.disk_changes == ["workflow 'w'"] and app.find("w").parallel
    on_disk = (app_dir / "scanflow.yaml").read_text()
    other.find("w").executors[0].retries = 5  # the same entry, changed on both sides
    with pytest.raises(ConflictError, match="executor w/a changed both there and here: nothing was written"):
        other.save()
    assert (app_dir / "scanflow.yaml").read_text() == on_disk


def test_an_app_folder_opens_with_its_workflows_and_a_save_keeps_them(app_dir):
    App(app_dir, [Workflow("w", executors=[Executor("a", code="print(1)")])]).save()
    app = App(app_dir)
    assert [wf.name for wf in app.workflows] == ["w"]
    app.add(Workflow("other"))
    app.save()
    assert [wf.name for wf in App(app_dir).workflows] == ["w", "other"]
    App(app_dir, [Workflow("late")]).save()  # another process adds a workflow this app never saw
    app.remove("other")
    assert [wf.name for wf in App(app_dir).workflows] == ["w", "late"]
    assert [wf.name for wf in app.workflows] == ["w", "late"]


# -- 6. secrets stay out of files, MLflow and logs; parameters are given once ---------------------------
def test_a_secret_passes_by_name_and_is_nowhere_in_the_app_folder(run_cell, app_dir, monkeypatch):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("API_KEY", secret)
    run_cell(f"%scanflow app {app_dir}")
    run_cell("%scanflow workflow w")
    result, out, err = run_cell(f"%%scanflow executor leak -w w --env API_KEY={secret}\nprint(1)")
    assert not result.success and "Traceback" not in out + err
    assert "API_KEY looks like a secret" in err and "pass it by name (--env API_KEY" in err
    assert not (app_dir / "w" / "leak.py").exists()

    code = "import hashlib, os\nprint('key digest', hashlib.sha256(os.environ['API_KEY'].encode()).hexdigest()[:16])"
    result, out, _ = run_cell(f"%%scanflow executor use -w w --env API_KEY --env MODE=fast --run\n{code}")
    assert result.success and result.result.ok, out
    assert f"key digest {hashlib.sha256(secret.encode()).hexdigest()[:16]}" in out  # the kernel's value arrived
    saved = yaml.safe_load((app_dir / "scanflow.yaml").read_text())
    assert saved["workflows"][0]["executors"][0]["env"] == {"API_KEY": None, "MODE": "fast"}
    leaks = [p for p in app_dir.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaks == [], "the secret was written to disk (scanflow.yaml, logs, the MLflow store or artifacts)"

    monkeypatch.delenv("API_KEY")
    result, _, err = run_cell("%scanflow run w --force")
    assert not result.success and "passed API_KEY by name, but the kernel's environment does not have it" in err


def test_a_repeated_param_is_an_error_naming_the_key(run_cell, app_dir):
    run_cell(f"%scanflow app {app_dir}")
    run_cell("%scanflow workflow w")
    result, _, err = run_cell("%%scanflow executor a -w w --param lr=0.1 --param epochs=3 --param lr=0.2\nprint(1)")
    assert not result.success and "--param lr is given twice" in err and "Traceback" not in err
    assert not (app_dir / "w" / "a.py").exists()


@pytest.mark.docker
def test_exports_pass_a_secret_by_name_too(tmp_path, base_image, monkeypatch):
    from scanflow_nb.containers.export import export

    secret = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("API_KEY", secret)
    ex = Executor("a", code="print(1)", env={"API_KEY": None, "MODE": "fast"})
    app = new_app(tmp_path / "app", Workflow("w", executors=[ex]))
    files = {kind: export(app, "w", kind, tmp_path / kind, echo=lambda line: None) for kind in ("compose", "k8s")}
    assert all(secret not in path.read_text() for path in files.values())
    compose = yaml.safe_load(files["compose"].read_text())
    env = next(s["environment"] for name, s in compose["services"].items() if name != "tracker")
    assert env["API_KEY"] is None and env["MODE"] == "fast"  # compose takes API_KEY from the deploying shell
    job = next(d for d in yaml.safe_load_all(files["k8s"].read_text()) if d["kind"] == "Job")
    k8s_env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert k8s_env["API_KEY"] == {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "w-env", "key": "API_KEY"}}}
    assert k8s_env["MODE"] == {"name": "MODE", "value": "fast"}


# -- 3. the embedded store heals ---------------------------------------------------------------------
def test_a_deleted_then_damaged_store_is_recreated_and_the_next_runs_succeed(run_cell, app_dir):
    from mlflow import MlflowClient

    run_cell(f"%scanflow app {app_dir}")
    run_cell("%scanflow workflow w")
    run_cell("%%scanflow executor a -w w\nimport mlflow\nmlflow.log_metric('m', 1.0)\nprint('ran')")
    result, out, err = run_cell("%scanflow run w")
    assert result.success and result.result.ok, out + err
    db = app_dir / ".scanflow" / "mlflow.db"

    db.unlink()  # a user cleaning up, or `git clean`
    result, out, err = run_cell("%scanflow run w --force")
    assert result.success and result.result.ok and "Traceback" not in out + err, out + err
    assert [line for line in err.splitlines() if line.startswith("[scanflow]")] == [
        f"[scanflow] the MLflow store {db} was deleted: created a new, empty one (earlier runs are not in it)"
    ]
    run = MlflowClient(f"sqlite:///{db}").get_run(result.result.executors["w/a"].run_id)
    assert run.data.metrics["m"] == 1.0 and run.info.status == "FINISHED"

    garbage = b"this is not a database\n" * 100
    db.write_bytes(garbage)  # overwritten in place: the kernel's open connections point at it
    result, out, err = run_cell("%scanflow run w --force")
    assert result.success and result.result.ok and "Traceback" not in out + err, out + err
    note = next(line for line in err.splitlines() if line.startswith("[scanflow]"))
    assert "was damaged (not a SQLite database): kept it as mlflow.db.damaged-" in note
    kept = db.parent / note.split("kept it as ")[1].split(",")[0]  # beside it, its -wal and -shm (same name)
    assert kept.read_bytes() == garbage, "the damaged file was not kept as it was"


def test_a_store_damaged_before_the_kernel_started_is_set_aside(app_dir):
    app = new_app(app_dir, Workflow("w", executors=[Executor("a", code="print(1)")]))
    app.save()
    assert app.run("w", echo=False).ok
    db = app.state_dir / "mlflow.db"
    with open(db, "r+b") as f:  # an interrupted copy: the header is right, the rest is missing
        f.truncate(db.stat().st_size // 3)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from scanflow_nb import App; print(App({str(app_dir)!r}).run('w', echo=False).status)",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and out.stdout.strip() == "succeeded", out.stderr
    assert "Traceback" not in out.stderr and "was damaged" in out.stderr and "created a new, empty one" in out.stderr


def test_a_store_locked_by_another_processs_write_is_not_set_aside(app_dir):
    """Another kernel or a service committing holds SQLite's lock; every run must still be there after."""
    from scanflow_nb.track.store import get_client, heal

    app = new_app(app_dir, Workflow("w", executors=[Executor("a", code="print(1)")]))
    app.save()
    result = app.run("w", echo=False)
    db = app.state_dir / "mlflow.db"
    uri = f"sqlite:///{db}"
    writer = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline() == "locked\n"
        assert heal(uri) is None  # this kernel has seen the store before
        first_sight = subprocess.run(
            [sys.executable, "-c", f"from scanflow_nb.track.store import heal; print(heal({uri!r}))"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert first_sight.returncode == 0 and first_sight.stdout == "None\n", first_sight.stderr
        assert writer.poll() is None, "the lock was released before the checks ran"
    finally:
        writer.communicate("commit\n", timeout=30)
    assert db.exists() and not list(db.parent.glob("mlflow.db.damaged-*"))
    assert get_client(uri).get_run(result.executors["w/a"].run_id).info.status == "FINISHED"


LOCK_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
"""


# -- 4. output is bounded in the cell, on disk and in the kernel's memory ------------------------------
def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


FLOOD = """\
import sys
line = "x" * 99 + "\\n"
for _ in range(2_000_000):  # 200 MB
    sys.stdout.write(line)
print("the end")
"""


def test_an_executor_printing_200_mb_keeps_the_cell_the_log_and_the_kernel_bounded(
    shell, run_cell, app_dir, monkeypatch
):
    import threading

    from mlflow import MlflowClient

    run_cell(f"%scanflow app {app_dir}")
    run_cell("%scanflow workflow w")
    run_cell(f"%%scanflow executor flood -w w\n{FLOOD}")
    run_cell("%%scanflow executor warm -w w\nprint('warm')")
    run_cell("%scanflow run w --only warm")  # the store and MLflow are loaded before measuring
    magics = shell.magics_manager.registry["ScanflowMagics"]
    monkeypatch.setattr(magics, "log_megabytes", magics.log_megabytes)  # restored after the test
    run_cell("%config ScanflowMagics.log_megabytes = 50")
    peak, done = [rss_mb()], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(rss_mb())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result, out, _ = run_cell("%scanflow run w --only flood --no-graph")
    done.set()
    sampler.join(5)
    assert result.success and result.result.ok, out[-2000:]
    growth = max(peak) - peak[0]
    assert growth < 20, f"the kernel grew by {growth:.0f} MB while the executor printed 200 MB"

    r = result.result.executors["w/flood"]
    log = app_dir / ".scanflow" / "logs" / "w" / "flood.log"
    shown = [line for line in out.splitlines() if line.startswith("[w/flood] ")]
    assert len(shown) <= 25 * (r.duration + 2), f"{len(shown)} lines in the cell in {r.duration:.0f} s"
    assert f"lines hidden, full log: {log}" in out and shown[-2:] == [
        "[w/flood] the end",
        f"[w/flood] succeeded in {r.duration:.2f} s",
    ]

    assert 50 * 2**20 < log.stat().st_size < 50 * 2**20 + 10_000
    last = tail_lines(log, 11)
    assert last[0].startswith("[scanflow] log truncated at its size limit:") and last[-1] == "the end"
    artifact = MlflowClient(result.result.tracking_uri).get_run(r.run_id).info.artifact_uri
    linked = Path(artifact.removeprefix("file://")) / "scanflow" / "flood.log"
    assert linked.stat().st_ino == log.stat().st_ino, "the MLflow artifact is a second copy of the log"

    _, out, _ = run_cell("%scanflow logs flood")
    assert len(out) < 100_000 and f"shortened here, full log: {log}" in out and out.rstrip().endswith("the end")


@pytest.mark.server
def test_a_large_log_sent_to_a_tracking_server_is_compressed(app_dir, tmp_path):
    import gzip
    import socket

    from mlflow import MlflowClient

    from scanflow_nb import Tracker
    from scanflow_nb.track import embedded_uri, get_client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = "for i in range(40_000):\n    print(f'line {i:08d} ' + 'y' * 40)\n"  # 2 MB
    app = new_app(app_dir, Workflow("w", tracker=Tracker(port=port), executors=[Executor("loud", code=code)]))
    app.state_dir.mkdir()
    get_client(embedded_uri(app.state_dir)).search_experiments()  # the store's tables, before the server starts
    result = app.run("w", echo=False)
    assert result.ok, result.summary()
    client = MlflowClient(result.tracking_uri)
    run_id = result.executors["w/loud"].run_id
    assert not client.get_run(run_id).info.artifact_uri.startswith("file:")  # served: a copy is unavoidable
    artifacts = {f.path for f in client.list_artifacts(run_id, "scanflow")}
    assert "scanflow/loud.log.gz" in artifacts and "scanflow/loud.log" not in artifacts
    packed = client.download_artifacts(run_id, "scanflow/loud.log.gz", str(tmp_path))
    log = app.state_dir / "logs" / "w" / "loud.log"
    assert gzip.decompress(Path(packed).read_bytes()) == log.read_bytes()
    assert Path(packed).stat().st_size < log.stat().st_size / 5
