"""The run writer: MLflow writes off the engine's path, batched, all flushed on close, failures reported,
and runs a killed process left open marked FAILED on the next open. A real SQLite store throughout."""

import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing

import pytest
from mlflow.tracking import MlflowClient

from scanflow_nb import App, Executor, Workflow
from scanflow_nb.errors import TrackerError
from scanflow_nb.track import embedded_uri
from scanflow_nb.track.runs import CRASHED, RunWriter


def new_writer(state):
    reports = []
    writer = RunWriter(embedded_uri(state), "exp", {"scanflow.app": "here"}, state, report=lambda *r: reports.append(r))
    return writer, reports


def test_everything_asked_for_reaches_mlflow(tmp_path):
    writer, reports = new_writer(tmp_path)
    root = writer.start_run("wf", "workflow")
    step = writer.start_run("step", "executor", parent=root, tags={"scanflow.key": "wf/step"}, params={"lr": 0.1})
    log = tmp_path / "step.log"
    log.write_text("hello\n")
    writer.log(step, metrics={"loss": 0.5}, tags={"note": "x"})
    writer.finish(step, "failed", metrics={"exit_code": 3}, tags={"scanflow.error": "exit code 3"}, artifacts=[log])
    writer.finish(root, "failed")
    assert writer.close() == [] and reports == []

    client = MlflowClient(embedded_uri(tmp_path))
    run = client.get_run(step.id)
    assert run.info.status == "FAILED" and run.info.run_name == "step"
    assert run.data.params == {"lr": "0.1"} and run.data.metrics == {"loss": 0.5, "exit_code": 3.0}
    tags = run.data.tags
    assert tags["mlflow.parentRunId"] == root.id and tags["scanflow.kind"] == "executor"
    assert tags["scanflow.status"] == "failed" and tags["scanflow.error"] == "exit code 3"
    assert tags["scanflow.app"] == "here" and tags["note"] == "x"
    assert [f.path for f in client.list_artifacts(step.id, "scanflow")] == ["scanflow/step.log"]
    assert client.get_run(root.id).info.status == "FAILED"
    assert not list((tmp_path / "open-runs").iterdir()), "the crash journal outlived a clean close"


def test_nothing_waits_for_a_busy_store_and_runs_keep_the_times_they_were_asked_for(tmp_path):
    writer, _ = new_writer(tmp_path)
    root = writer.start_run("wf", "workflow")
    assert root.id  # the store is open
    lock = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another process holds the store
    try:
        step = writer.start_run("step", "executor", parent=root, params={"a": 1})
        writer.log(step, metrics={"m": 1.0})
        writer.finish(step, "succeeded")
        writer.finish(root, "succeeded")
        asked = time.time() * 1000
        time.sleep(1.0)
        assert step.id_now is None, "the calls returned, and the run is not written yet"
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert writer.close() == []
    run = MlflowClient(embedded_uri(tmp_path)).get_run(step.id)
    assert run.info.status == "FINISHED" and run.data.params == {"a": "1"} and run.data.metrics == {"m": 1.0}
    assert run.info.start_time <= run.info.end_time <= asked, "times are when they were asked for, not written"


def test_a_refused_write_is_reported_and_the_rest_still_written(tmp_path):
    writer, reports = new_writer(tmp_path)
    step = writer.start_run("step", "executor", label="wf/step")
    run_id = step.id  # an executor starts once its run exists (and with it the store)
    client = MlflowClient(embedded_uri(tmp_path))
    client.log_param(run_id, "lr", "0.2")  # e.g. the executor logged its own value first
    writer.log(step, params={"lr": 0.1})
    writer.finish(step, "succeeded", metrics={"exit_code": 0})
    failures = writer.close()
    assert len(failures) == 1 and failures[0].startswith("wf/step: params not logged") and "lr" in failures[0]
    assert [label for label, _ in reports] == ["wf/step"]
    run = client.get_run(step.id)
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.2"}
    assert run.data.metrics == {"exit_code": 0.0} and run.data.tags["scanflow.status"] == "succeeded"


def test_a_store_that_keeps_failing_is_given_up_and_said_once(tmp_path):
    writer, reports = new_writer(tmp_path)
    steps = [writer.start_run(f"s{i}", "executor") for i in range(5)]
    assert all(step.id for step in steps)
    # the store breaks under the run: every write fails. (Garbage written over the file under a live connection
    # fails only the writes that read a page SQLite has not cached, in write-ahead mode: the next open sets it aside.)
    with closing(sqlite3.connect(tmp_path / "mlflow.db")) as db:
        db.execute("DROP TABLE runs")
    for step in steps:
        writer.finish(step, "succeeded", metrics={"exit_code": 0})
    failures = writer.close()
    assert len(failures) == 3 and len(reports) == 3
    assert failures[0].startswith("s0: metrics not logged") and failures[1].startswith("s0: tags not logged")
    assert failures[2] == "the run: 9 more write(s) not tried: the store failed 3 writes in a row"
    assert len(list((tmp_path / "open-runs").glob("*.runs"))) == 1, "runs left open stay in the journal"


def test_runs_still_open_are_closed_failed(tmp_path):
    writer, _ = new_writer(tmp_path)
    step = writer.start_run("step", "executor")
    assert writer.close() == []
    run = MlflowClient(embedded_uri(tmp_path)).get_run(step.id)
    assert run.info.status == "FAILED" and run.data.tags["scanflow.error"] == "the run ended before it finished"


def test_a_store_that_cannot_open_fails_the_run_with_one_error_and_runs_nothing(tmp_path):
    app = App(tmp_path / "app")
    app.add(Workflow("w", executors=[Executor("a", code="print('ran')")]))
    (app.state_dir / "mlflow.db").mkdir(parents=True)  # a damaged file would be healed; a folder cannot be opened
    with pytest.raises(TrackerError, match="cannot open the MLflow store at .*mlflow.db is not a file; move it away"):
        app.run("w", echo=False)
    assert not app.log_path("w/a").exists()


def test_a_cached_executor_costs_no_run_and_points_at_the_run_it_reuses(tmp_path):
    app = App(tmp_path / "app")
    app.add(Workflow("w", executors=[Executor("a", code="import mlflow; mlflow.log_metric('acc', 0.9)")]))
    first = app.run("w", echo=False)
    again = app.run("w", echo=False)
    assert again.executors["w/a"].status == "cached"
    assert again.executors["w/a"].run_id == first.executors["w/a"].run_id  # where its result and metrics are
    client = MlflowClient(again.tracking_uri)
    root = client.get_run(again.run_id)
    assert root.info.status == "FINISHED" and root.data.tags["scanflow.cached.w/a"] == first.executors["w/a"].run_id
    experiment = root.info.experiment_id
    assert not client.search_runs([experiment], f"tags.mlflow.parentRunId = '{again.run_id}'")
    assert client.get_run(first.executors["w/a"].run_id).data.metrics["acc"] == 0.9


def test_failed_writes_reach_the_result_and_the_console(tmp_path, capsys):
    app = App(tmp_path / "app")
    gone = "import mlflow, os; mlflow.MlflowClient().delete_run(os.environ['MLFLOW_RUN_ID'])"
    app.add(Workflow("w", executors=[Executor("gone", code=gone, parameters={"k": 1})]))
    result = app.run("w")
    out = capsys.readouterr().out
    assert result.ok and result.executors["w/gone"].status == "succeeded"
    assert result.tracking_errors and all(e.startswith("w/gone: ") for e in result.tracking_errors)
    assert "[w/gone] MLflow: " in out and "write(s) failed" in result.summary()


@pytest.mark.slow
def test_runs_a_killed_process_left_open_are_marked_failed_on_the_next_open(tmp_path):
    drive = tmp_path / "drive.py"
    drive.write_text(
        textwrap.dedent(f"""\
        from scanflow_nb import App, Executor, Workflow
        app = App({str(tmp_path / "app")!r})
        hang = "import os, time; open('pid', 'w').write(str(os.getpid())); time.sleep(60)"
        app.add(Workflow("w", executors=[Executor("hang", code=hang)]))
        app.add(Workflow("quick", executors=[Executor("q", code="pass")]))
        app.save()
        app.run("w", echo=False)
    """)
    )
    proc = subprocess.Popen([sys.executable, str(drive)])
    pid_file = tmp_path / "app" / "pid"
    deadline = time.monotonic() + 120
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid_file.exists(), "the executor never started"
    proc.kill()  # the kernel dies: nobody closes its MLflow runs
    proc.wait()
    subprocess.run(["kill", "-9", pid_file.read_text()], check=False)  # its orphaned executor too

    app = App.open(tmp_path / "app")
    client = MlflowClient(embedded_uri(app.state_dir))
    left = client.search_runs([client.get_experiment_by_name("w").experiment_id])
    assert {r.info.status for r in left} == {"RUNNING"} and len(left) == 2  # the workflow and its executor
    events = []
    assert app.run("quick", echo=False, listeners=[events.append]).ok
    for run in left:
        repaired = client.get_run(run.info.run_id)
        assert repaired.info.status == "FAILED" and repaired.data.tags["scanflow.error"] == CRASHED
    notes = [e.error for e in events if e.kind == "tracking"]
    assert notes == ["the app: marked 2 MLflow run(s) FAILED that a crashed run had left open"]


class OrderedWriter(RunWriter):
    """The writer, noting the order of its writes."""

    def __init__(self, *args, **kwargs):
        self.order = []
        super().__init__(*args, **kwargs)

    def _create(self, ref):
        self.order.append(("create", ref.name))
        super()._create(ref)

    def _flush(self, ref, pending):
        self.order.append(("flush", ref.name))
        super()._flush(ref, pending)


def test_a_held_burst_creates_the_next_run_before_writing_the_last_ones_record(tmp_path):
    """The engine ends one executor and starts the next in one burst: the next one waits for its run's
    creation only, not for the batch, artifacts and status of the one that ended."""
    writer = OrderedWriter(embedded_uri(tmp_path), "exp", state_dir=tmp_path)
    first = writer.start_run("first", "executor")
    assert first.id
    log = tmp_path / "first.log"
    log.write_text("done\n")
    with writer.held():
        writer.finish(first, "succeeded", metrics={"duration_s": 1.0}, logs=[log])
        second = writer.start_run("second", "executor")
        time.sleep(0.2)  # the writer's thread had time to start on anything it was free to
        assert second.id_now is None
    assert second.id
    writer.finish(second, "succeeded")
    assert writer.close() == []
    assert writer.order == [("create", "first"), ("create", "second"), ("flush", "first"), ("flush", "second")]
    assert MlflowClient(embedded_uri(tmp_path)).get_run(first.id).info.status == "FINISHED"


def test_new_stores_are_copies_of_one_migrated_store_and_write_ahead(tmp_path, monkeypatch):
    """MLflow's migrations run once per MLflow version (into the user's cache); each new store is a copy
    whose default experiment keeps its artifacts in its own app, and which writes ahead (WAL)."""
    from scanflow_nb.track import get_client

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for app in ("one", "two"):
        client = get_client(embedded_uri(tmp_path / app))
        assert client.get_experiment("0").artifact_location == str(tmp_path / app / "mlartifacts" / "0")
        run = client.create_run("0")
        (tmp_path / "note.txt").write_text(app)
        client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
        kept = tmp_path / app / "mlartifacts" / "0" / run.info.run_id / "artifacts" / "note.txt"
        assert kept.read_text() == app
        with closing(sqlite3.connect(tmp_path / app / "mlflow.db")) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert len(list((tmp_path / "cache" / "scanflow_nb").glob("empty-mlflow-*.db"))) == 1
