"""The local back end through the Python API: real subprocesses, a real MLflow store."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from scanflow_nb import App, Executor, ScanflowError, Workflow

STAMP = """\
import json, sys, time
start = time.time()
time.sleep({sleep})
with open("stamps.jsonl", "a") as f:
    f.write(json.dumps({{"name": "{name}", "start": start, "end": time.time()}}) + "\\n")
"""


def stamps(app):
    lines = (app.path / "stamps.jsonl").read_text().splitlines()
    return {d["name"]: d for d in map(json.loads, lines)}


def stamping(name, sleep=0.0, **kw):
    return Executor(name, code=STAMP.format(name=name, sleep=sleep), **kw)


def new_app(app_dir, *workflows):
    app = App(app_dir)
    app.path.mkdir(parents=True, exist_ok=True)
    for wf in workflows:
        app.add(wf)
    return app


def test_sequential_then_parallel_group_then_sequential(app_dir):
    app = new_app(
        app_dir,
        Workflow(
            "main",
            executors=[stamping("a"), stamping("b")],
            workflows=[
                Workflow("par", parallel=True, executors=[stamping("x", 1.0), stamping("y", 1.0)]),
                Workflow("post", executors=[stamping("z")]),
            ],
        ),
    )
    result = app.run("main", echo=False)
    assert result.status == "succeeded", result.summary()
    s = stamps(app)
    assert s["a"]["end"] <= s["b"]["start"]
    assert s["b"]["end"] <= min(s["x"]["start"], s["y"]["start"])
    assert s["x"]["start"] < s["y"]["end"] and s["y"]["start"] < s["x"]["end"]  # overlapped
    assert max(s["x"]["end"], s["y"]["end"]) <= s["z"]["start"]
    assert {k: r.status for k, r in result.executors.items()} == dict.fromkeys(
        ["main/a", "main/b", "par/x", "par/y", "post/z"], "succeeded"
    )


def test_max_workers_bounds_a_parallel_group(app_dir):
    app = new_app(app_dir, Workflow("p", parallel=True, executors=[stamping(n, 0.5) for n in "abc"]))
    assert app.run("p", max_workers=1, echo=False).ok
    s = sorted(stamps(app).values(), key=lambda d: d["start"])
    assert all(s[i]["end"] <= s[i + 1]["start"] for i in range(2))


def test_failure_stops_what_follows_and_reports_why(app_dir, capsys):
    app = new_app(
        app_dir,
        Workflow(
            "main", executors=[Executor("bad", code="print('about to fail'); raise SystemExit(3)"), stamping("after")]
        ),
    )
    result = app.run("main")
    out = capsys.readouterr().out
    assert result.status == "failed" and result.failed == ["main/bad"]
    bad = result.executors["main/bad"]
    assert bad.exit_code == 3 and bad.error == "exit code 3"
    assert result.executors["main/after"].status == "skipped"
    assert "upstream main/bad failed" in result.executors["main/after"].error
    assert "[main/bad] FAILED: exit code 3" in out and "about to fail" in out.split("FAILED")[1]
    assert not (app.path / "stamps.jsonl").exists()


def test_parallel_failure_spares_independent_siblings(app_dir):
    app = new_app(
        app_dir,
        Workflow(
            "p",
            parallel=True,
            executors=[
                Executor("bad", code="raise SystemExit(1)"),
                stamping("ok"),
                stamping("needs_bad", depends_on=["bad"]),
            ],
        ),
    )
    result = app.run("p", echo=False)
    assert {k: r.status for k, r in result.executors.items()} == {
        "p/bad": "failed",
        "p/ok": "succeeded",
        "p/needs_bad": "skipped",
    }


def test_retries_until_success(app_dir):
    flaky = textwrap.dedent("""\
        import pathlib
        n = pathlib.Path("tries"); k = int(n.read_text()) + 1 if n.exists() else 1; n.write_text(str(k))
        print("attempt", k)
        raise SystemExit(0 if k == 3 else 1)
    """)
    app = new_app(app_dir, Workflow("w", executors=[Executor("flaky", code=flaky, retries=2)]))
    result = app.run("w", echo=False)
    r = result.executors["w/flaky"]
    assert r.status == "succeeded" and r.attempts == 3
    log = app.logs("flaky")
    assert "attempt 1" in log and "--- attempt 3 of 3 ---" in log


def test_timeout_kills_the_attempt_and_its_children(app_dir):
    code = textwrap.dedent("""\
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open("child.pid", "w").write(str(child.pid)); print("started", flush=True); time.sleep(600)
    """)
    app = new_app(app_dir, Workflow("w", executors=[Executor("slow", code=code, timeout=1.5, retries=1)]))
    result = app.run("w", echo=False)
    r = result.executors["w/slow"]
    assert r.status == "failed" and r.error == "timed out after 1.5 s" and r.attempts == 2
    assert r.duration < 120  # two attempts of 1.5 s and their stops (slow on a busy machine), not the 600 s sleeps
    pid = int((app.path / "child.pid").read_text())
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid), "the executor's own child process survived the timeout"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its reaper is dead too
        return f.read().split()[2] != "Z"


def test_caching_force_inputs_and_outputs(app_dir):
    code = "import pathlib; pathlib.Path('out.txt').write_text(open('in.txt').read().upper()); print('ran')"
    app = new_app(
        app_dir,
        Workflow(
            "w", executors=[Executor("up", code=code, inputs=["in.txt"], outputs=["out.txt"], parameters={"k": 1})]
        ),
    )
    (app.path / "in.txt").write_text("a")
    assert app.run("w", echo=False).executors["w/up"].status == "succeeded"
    assert app.run("w", echo=False).executors["w/up"].status == "cached"
    assert app.run("w", echo=False, force=True).executors["w/up"].status == "succeeded"
    (app.path / "in.txt").write_text("b")  # input changed
    assert app.run("w", echo=False).executors["w/up"].status == "succeeded"
    assert (app.path / "out.txt").read_text() == "B"
    (app.path / "out.txt").unlink()  # output gone
    assert app.run("w", echo=False).executors["w/up"].status == "succeeded"
    app.find("w").executors[0].parameters["k"] = 2  # parameter changed
    assert app.run("w", echo=False).executors["w/up"].status == "succeeded"
    assert app.run("w", echo=False).executors["w/up"].status == "cached"


def test_only_and_from_select_executors(app_dir):
    app = new_app(app_dir, Workflow("w", executors=[stamping("a"), stamping("b"), stamping("c")]))
    result = app.run("w", only="b", echo=False)
    assert set(stamps(app)) == {"b"}
    assert result.executors["w/a"].status == "skipped" and result.executors["w/a"].error == "not selected"
    (app.path / "stamps.jsonl").unlink()
    app.run("w", from_="b", echo=False, force=True)
    assert set(stamps(app)) == {"b", "c"}


def test_parameters_reach_the_script_and_output_streams_to_listeners(app_dir):
    code = (
        "import argparse; p = argparse.ArgumentParser(); p.add_argument('--alpha', type=float); "
        "print('alpha is', p.parse_args().alpha)"
    )
    app = new_app(app_dir, Workflow("w", executors=[Executor("p", code=code, parameters={"alpha": 0.5})]))
    events = []
    app.run("w", echo=False, listeners=[events.append])
    kinds = [(e.kind, e.key) for e in events]
    assert kinds[0] == ("run_started", None) and kinds[-1] == ("run_finished", None)
    assert ("started", "w/p") in kinds and ("succeeded", "w/p") in kinds
    assert [e.line for e in events if e.kind == "line"] == ["alpha is 0.5"]


def test_mlflow_run_tree_params_metrics_and_artifacts(app_dir):
    from mlflow.tracking import MlflowClient

    code = "import mlflow; mlflow.log_metric('acc', 0.9); print('logged')"
    app = new_app(
        app_dir,
        Workflow(
            "main",
            executors=[Executor("train", code=code, parameters={"lr": 0.1})],
            workflows=[Workflow("sub", executors=[stamping("s")])],
        ),
    )
    result = app.run("main", echo=False)
    client = MlflowClient(result.tracking_uri)
    root = client.get_run(result.run_id)
    assert root.info.status == "FINISHED" and root.data.tags["scanflow.kind"] == "workflow"
    children = client.search_runs([root.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["sub", "train"]
    train = client.get_run(result.executors["main/train"].run_id)
    assert train.data.params == {"lr": "0.1"}
    assert train.data.metrics["acc"] == 0.9  # logged by the executor itself
    assert train.data.metrics["exit_code"] == 0 and train.data.metrics["duration_s"] > 0
    assert train.data.tags["scanflow.status"] == "succeeded"
    files = {f.path for f in client.list_artifacts(train.info.run_id, "scanflow")}
    assert files == {"scanflow/train.log", "scanflow/train.py", "scanflow/provenance.json"}
    sub = next(r for r in children if r.info.run_name == "sub")
    s = client.get_run(result.executors["sub/s"].run_id)
    assert s.data.tags["mlflow.parentRunId"] == sub.info.run_id


def test_failed_run_marks_mlflow_runs_failed(app_dir):
    from mlflow.tracking import MlflowClient

    app = new_app(app_dir, Workflow("w", executors=[Executor("bad", code="raise SystemExit(2)")]))
    result = app.run("w", echo=False)
    client = MlflowClient(result.tracking_uri)
    assert client.get_run(result.run_id).info.status == "FAILED"
    bad = client.get_run(result.executors["w/bad"].run_id)
    assert bad.info.status == "FAILED" and bad.data.tags["scanflow.error"] == "exit code 2"


def test_bad_runs_are_refused_before_anything_starts(app_dir):
    app = new_app(app_dir, Workflow("w", executors=[Executor("a", file="w/missing.py")]), Workflow("empty"))
    with pytest.raises(ScanflowError, match="missing.py does not exist"):
        app.run("w", echo=False)
    with pytest.raises(ScanflowError, match="has no executors"):
        app.run("empty", echo=False)
    with pytest.raises(ScanflowError, match="unknown workflow 'nope'"):
        app.run("nope", echo=False)
    with pytest.raises(ScanflowError, match="unknown back end"):
        app.run("w", "k8s", echo=False)
    assert not (app.state_dir / "runs").exists()


def test_background_run_can_be_cancelled(app_dir):
    app = new_app(
        app_dir,
        Workflow(
            "w",
            executors=[
                Executor("sleepy", code="import time; print('up', flush=True); time.sleep(60)"),
                stamping("next"),
            ],
        ),
    )
    up = threading.Event()
    handle = app.run("w", echo=False, background=True, listeners=[lambda e: e.line == "up" and up.set()])
    assert up.wait(180), "the executor never started"
    handle.cancel()
    result = handle.result(timeout=30)
    assert result.status == "interrupted"
    assert result.executors["w/sleepy"].error == "interrupted"
    assert result.executors["w/next"].status == "skipped"


def test_waiting_on_a_background_run_for_a_state_it_will_never_reach_says_so(app_dir):
    app = new_app(
        app_dir,
        Workflow("w", executors=[Executor("boom", code="raise SystemExit(3)"), stamping("after")]),
    )
    handle = app.run("w", echo=False, background=True)
    with pytest.raises(ScanflowError, match="no executor 'nope' here"):
        handle.wait_for("nope")
    with pytest.raises(ScanflowError, match="w/boom is failed, and will not be succeeded"):
        handle.wait_for("boom", "succeeded", timeout=180)
    assert handle.result(timeout=60).status == "failed"
    assert handle.wait_for("w/after", "skipped") is handle  # a state it did reach


def test_keyboard_interrupt_stops_child_processes(tmp_path):
    """A real SIGINT to a process running a workflow, as when a kernel is interrupted."""
    script = tmp_path / "drive.py"
    script.write_text(
        textwrap.dedent(f"""\
        from scanflow_nb import App, Executor, Workflow
        app = App({str(tmp_path / "app")!r})
        code = "import os, time; open('pid', 'w').write(str(os.getpid())); print('up', flush=True); time.sleep(60)"
        app.add(Workflow("w", parallel=True, executors=[Executor("a", code=code)]))
        try:
            app.run("w", echo=False)
        except KeyboardInterrupt:
            print("INTERRUPTED", app.status("w")["w"].status, flush=True)
    """)
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid_file = tmp_path / "app" / "pid"
    deadline = time.monotonic() + 300  # opening a new MLflow store takes long on a busy machine
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        assert proc.poll() is None, "the driver ended before the executor started"
        time.sleep(0.2)
    child = int(pid_file.read_text())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=180)  # it closes its MLflow runs first, slow when the machine is busy
    assert "INTERRUPTED interrupted" in out, err[-3000:]
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child)


@pytest.mark.slow
def test_isolated_requirements_get_their_own_venv_once(app_dir):
    from scanflow_nb.run.local import LocalBackend

    code = "import sys, six; print(sys.prefix)"
    app = new_app(
        app_dir,
        Workflow(
            "w",
            executors=[Executor("a", code=code, requirements=["six"]), Executor("b", code=code, requirements=["six"])],
        ),
    )
    result = app.run("w", LocalBackend(isolated=True), echo=False)
    assert result.ok, result.summary()
    prefixes = {app.logs(k).strip() for k in ("a", "b")}
    assert len(prefixes) == 1 and str(app.state_dir / "venvs") in prefixes.pop()


def test_run_that_cannot_start_still_tells_listeners_it_finished(app_dir):
    import socket

    from scanflow_nb import Tracker

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        app = new_app(app_dir, Workflow("w", tracker=Tracker(port=busy.getsockname()[1]), executors=[stamping("a")]))
        events = []
        with pytest.raises(ScanflowError, match="already in use"):
            app.run("w", echo=False, listeners=[events.append])
    assert events[-1].kind == "run_finished" and "already in use" in events[-1].error
