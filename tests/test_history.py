"""History, compare, provenance and re-run, on real runs in a real MLflow store."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from scanflow_nb import App, Executor, Workflow
from scanflow_nb.errors import NotFoundError
from scanflow_nb.resources import PEAK_RSS_MB
from scanflow_nb.track import get_client

TRAIN = """\
import argparse, mlflow
parser = argparse.ArgumentParser()
parser.add_argument("--k", type=float)
args = parser.parse_args()
x = float(open("in.txt").read())
score = args.k * x
mlflow.log_metric("score", score)
"""
PREP = "open('mid.txt', 'w').write('prepared')"


def make_app(app_dir, k=2) -> App:
    app = App(app_dir)
    app.path.mkdir(parents=True, exist_ok=True)
    (app.path / "in.txt").write_text("3")
    (app.path / "notes.txt").write_text("first notes")
    app.add(
        Workflow(
            "main",
            executors=[
                Executor("prep", code=PREP, outputs=["mid.txt"]),
                Executor("train", code=TRAIN, parameters={"k": k}, inputs=["in.txt", "notes.txt"]),
            ],
        )
    )
    app.save()
    return app


def edit_train(app, code=TRAIN, k=2):
    """What running the train cell again with other code does."""
    app.declare_executor("main", "train", code, parameters={"k": k}, inputs=["in.txt", "notes.txt"])


def scanflow(*args):
    return subprocess.run([sys.executable, "-m", "scanflow_nb.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def ran_twice(tmp_path_factory):
    """An app run twice by another process (the `scanflow` CLI); the second run finds everything unchanged
    and both executors cached. Read, never changed, by the tests that use it."""
    app_dir = tmp_path_factory.mktemp("history") / "app"
    make_app(app_dir)
    for _ in range(2):
        done = scanflow("--file", str(app_dir), "run", "main", "--quiet")
        assert done.returncode == 0, done.stdout + done.stderr
    return app_dir


def test_history_sees_runs_made_by_another_process(ran_twice):
    app_dir = ran_twice
    frame = App.open(app_dir).runs()
    assert list(frame["status"]) == ["succeeded", "succeeded"]
    assert frame["start"].is_monotonic_decreasing  # newest first
    newest, oldest = frame.iloc[0], frame.iloc[1]
    assert (oldest["succeeded"], oldest["cached"], newest["succeeded"], newest["cached"]) == (2, 0, 0, 2)
    assert oldest["train.k"] == 2 and oldest["train.score"] == 6.0  # typed: parameters and metrics are numbers
    # the user's parameters and metrics first, then what the engine measured of every executor
    columns = list(frame.columns)
    assert columns.index("train.score") < columns.index("prep.duration_s") < columns.index(f"train.{PEAK_RSS_MB}")
    assert set(frame["backend"]) == {"local"} and frame["duration"].gt(0).all()
    assert list(App.open(app_dir).runs("main", last=1)["run_id"]) == [newest["run_id"]]
    with pytest.raises(NotFoundError, match="unknown workflow 'nope'"):
        App.open(app_dir).runs("nope")
    listed = scanflow("--file", str(app_dir), "runs", "--last", "1")
    assert (
        listed.returncode == 0 and newest["run_id"][:8] in listed.stdout and oldest["run_id"][:8] not in listed.stdout
    )
    csv = scanflow("--file", str(app_dir), "runs", "--csv").stdout.splitlines()
    assert csv[0].startswith("run_id,workflow,start,duration,status") and "train.score" in csv[0] and len(csv) == 3


def test_sqlite_reader_and_mlflow_reader_agree(ran_twice):
    """The fast reader of the embedded store sees exactly what MLflow's own search returns: two workflow
    runs and the first run's two executor runs (cached executors cost no run)."""
    from scanflow_nb.track.history import _read_mlflow, _read_sqlite, sqlite_path

    uri = App.open(ran_twice).store_uri

    def view(records):
        return sorted(
            (r.run_id, r.name, r.experiment, r.mlflow_status, round(r.start, 3), r.params, r.metrics, r.tags)
            for r in records
        )

    kinds = ("workflow", "executor")
    fast, sure = view(_read_sqlite(sqlite_path(uri), kinds, None, None)), view(_read_mlflow(uri, kinds, None))
    assert len(fast) == 4 and fast == sure


def test_compare_shows_the_changed_line_and_parameter(app_dir, run_cell):
    app = make_app(app_dir)
    first = app.run("main", echo=False)
    hungry = "score = args.k * x + 1\nballast = b'x' * (400 * 2**20)  # 400 MiB more at its peak"
    edit_train(app, TRAIN.replace("score = args.k * x", hungry), k=5)
    second = app.run("main", echo=False)
    diff = app.compare(first.run_id, second.run_id[:8])
    train = diff["train"]
    assert "-score = args.k * x" in train.code and "+score = args.k * x + 1" in train.code
    # what the code logged, apart from what it cost: the usage metrics only when they moved beyond noise
    assert train.parameters == {"k": (2, 5)} and train.metrics == {"score": (6.0, 16.0)}
    before, after = train.resources[PEAK_RSS_MB]
    assert after - before > 300 and diff["prep"].resources == {}
    assert train.inputs == {} and train.requirements == []
    assert diff["prep"].status == ("succeeded", "cached") and diff.changed == ["main/prep", "main/train"]
    text = str(diff)
    assert "k: 2 -> 5" in text and "+score = args.k * x + 1" in text and "score: 6 -> 16" in text
    header = next(line for line in text.splitlines() if line.startswith("main/train:"))
    assert f"peak memory {before:.3g} -> {after:.3g} MiB" in header
    assert "+score = args.k * x + 1" in diff._repr_html_()
    run_cell("%scanflow app " + str(app_dir))
    result, out, _ = run_cell(f"%scanflow compare {first.run_id} {second.run_id}")
    assert result.result.executors["main/train"].parameters == {"k": (2, 5)}
    result, out, err = run_cell("%scanflow compare abcdefg " + second.run_id)
    assert err.startswith("UsageError: no run 'abcdefg' in this app's MLflow store") and len(err.splitlines()) == 1


def test_compare_keeps_usage_noise_out_of_the_report():
    """CPU time and memory that moved as much as they do between identical runs are not reported."""
    from scanflow_nb.resources import CPU_S
    from scanflow_nb.track.compare import diff_executor
    from scanflow_nb.track.history import RunRecord
    from scanflow_nb.track.recorded import ExecutorRecord

    def record(score, cpu, peak):
        metrics = {"score": score, CPU_S: cpu, PEAK_RSS_MB: peak}
        return ExecutorRecord("wf/ex", RunRecord("r", "ex", "e", "FINISHED", 0.0, 1.0, metrics=metrics))

    noise = diff_executor("wf/ex", record(1.0, 6.5, 217.0), record(1.0, 7.6, 260.0))
    assert noise.metrics == {} and noise.resources == {} and not noise.changed
    tiny = diff_executor("wf/ex", record(1.0, 0.2, 20.0), record(1.0, 0.9, 70.0))  # 4x, but under a second
    assert tiny.resources == {}
    moved = diff_executor("wf/ex", record(1.0, 6.5, 217.0), record(2.0, 13.0, 217.0))
    assert moved.metrics == {"score": (1.0, 2.0)} and moved.resources == {CPU_S: (6.5, 13.0)}


def test_provenance_of_an_executor_run(app_dir):
    from scanflow_nb.track.recorded import load_run

    app = make_app(app_dir)
    (app_dir / ".gitignore").write_text("mid.txt\n")  # an output of the workflow, not source
    subprocess.run(["git", "init", "-q", str(app_dir)], check=True)
    subprocess.run(["git", "-C", str(app_dir), "add", "-A"], check=True)
    subprocess.run(
        ["git", "-C", str(app_dir), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one"], check=True
    )
    head = subprocess.run(["git", "-C", str(app_dir), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    first = app.run("main", echo=False)
    run = get_client(app.store_uri).get_run(first.executors["main/train"].run_id)
    assert run.data.tags["mlflow.source.git.commit"] == head.strip()
    assert run.data.tags["scanflow.git.dirty"] == "false"  # the state folder does not count
    assert run.data.tags["mlflow.source.name"] == "main/train.py"
    record = load_run(app.store_uri, first.run_id).executors["main/train"]
    p = record.provenance
    assert p["parameters"] == {"k": 2} and p["args"] == ["--k", "2"]
    assert p["inputs"]["in.txt"] == hashlib.sha256(b"3").hexdigest()
    assert p["python"] == f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    assert p["git"] == {"commit": head.strip(), "dirty": False} and p["backend"] == "local"
    assert record.code == TRAIN
    prep = load_run(app.store_uri, first.run_id).executors["main/prep"].provenance
    assert prep["outputs"] == {"mid.txt": hashlib.sha256(b"prepared").hexdigest()}
    (app_dir / "notes.txt").write_text("edited, not committed")
    second = app.run("main", echo=False)
    run = get_client(app.store_uri).get_run(second.executors["main/train"].run_id)
    assert run.data.tags["scanflow.git.dirty"] == "true"
    declared = json.loads((app.state_dir / "provenance" / "workflows" / "main" / "workflow.json").read_text())
    assert declared["root"] == "main" and declared["workflow"]["executors"][1]["code"] == TRAIN


def test_rerun_reproduces_the_recorded_metric_after_the_cell_was_edited(app_dir, run_cell):
    app = make_app(app_dir)
    first = app.run("main", echo=False)
    edit_train(app, TRAIN.replace("args.k * x", "args.k * x * 10"), k=7)
    assert app.run("main", echo=False).ok
    (app_dir / "notes.txt").write_text("notes changed since")
    run_cell("%scanflow app " + str(app_dir))
    result, out, _ = run_cell(f"%scanflow rerun {first.run_id[:10]} --quiet")
    again = result.result
    assert again.ok, out
    assert "inputs changed since: notes.txt (main/train)" in out and "recorded code and parameters" in out
    frame = app.runs()
    assert list(frame["train.score"]) == [6.0, 210.0, 6.0]  # newest first: the re-run gives the first run's 6.0
    assert frame.iloc[0]["rerun_of"] == first.run_id and frame.iloc[0]["train.k"] == 2
    assert (app_dir / "main" / "train.py").read_text() == TRAIN.replace("args.k * x", "args.k * x * 10")  # untouched
    diff = app.compare(first.run_id, again.run_id)
    assert diff["train"].code == [] and diff["train"].parameters == {} and diff["train"].metrics == {}
    assert "notes.txt" in diff["train"].inputs
    only = app.rerun(first.executors["main/train"].run_id, echo=False)  # an executor's run: that executor alone
    assert only.executors["main/train"].status == "succeeded" and only.executors["main/prep"].status == "skipped"


def test_history_of_an_app_that_never_ran_is_empty(app_dir):
    frame = make_app(app_dir).runs()
    assert frame.empty and list(frame.columns[:5]) == ["run_id", "workflow", "start", "duration", "status"]
    assert not (app_dir / ".scanflow" / "mlflow.db").exists()  # reading created nothing


@pytest.mark.server
def test_ui_serves_the_app_store_on_localhost(app_dir, run_cell):
    import urllib.request

    app = make_app(app_dir)
    run_cell("%scanflow app " + str(app_dir))
    _, out, _ = run_cell("%scanflow ui")
    server = app.ui()  # the same server: one per store and kernel
    try:
        assert out.startswith(f"MLflow UI of {app.path} at http://127.0.0.1:{server.port}")
        with urllib.request.urlopen(f"{server.uri}/health", timeout=10) as reply:
            assert reply.status == 200
    finally:
        server.stop()
    assert not server.alive()
