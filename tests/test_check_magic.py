"""`%scanflow checker` in a real IPython shell, and the drift monitor widget it shows."""

import threading
import time

import numpy as np
import pytest
import yaml
from IPython.core.error import UsageError

from scanflow_nb import ScanflowError
from scanflow_nb.check import tracking as tr
from scanflow_nb.check.watcher import CheckRecord
from scanflow_nb.datasets import corrupt, load_digits, load_tumours, shift_table


@pytest.fixture
def digits_app(app_dir, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    X, _ = load_digits()
    order = np.random.default_rng(0).permutation(len(X))
    app_dir.mkdir(parents=True)
    np.save(app_dir / "reference.npy", X[order[:1000]])
    (app_dir / "scanflow.yaml").write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "workflows": [{"name": "serve", "checker": {"detector": "ks", "every": 0.3}}, {"name": "other"}],
            }
        )
    )
    return app_dir, X[order[1000:1100]], corrupt(X[order[1100:1200]], "rotate", severity=4, seed=0)


def test_start_status_stop_from_the_notebook(shell, digits_app, capsys):
    app_dir, clean, drifted = digits_app
    shell.run_line_magic("scanflow", f"app {app_dir}")
    monitor = shell.run_line_magic("scanflow", "checker start serve --reference reference.npy")
    out = capsys.readouterr().out
    assert "checker of 'serve' watching experiment 'serve'" in out and "every 0.3 s" in out and "KSDetector" in out
    app = shell.magics_manager.registry["ScanflowMagics"].current_app
    uri = app.tracking_uri("serve")
    try:
        tr.log_batch(clean, uri, "serve")
        tr.log_batch(drifted, uri, "serve")
        monitor.wait(2, timeout=60)
        assert [p["drift"] for p in monitor.points] == [False, True]
        # p is tiny: the stream's alarm is raised with the drift, and the banner says so
        assert monitor.alert.startswith("ALARM: batch run") and "1 of 2 batches drifted" in monitor.alert
        assert monitor.level == "drift" and monitor.points[1]["alarm"]
        drifted_run = monitor.points[1]["batch"]
        monitor.selected = drifted_run  # what a click on the batch does: its most anomalous samples are read
        deadline = time.monotonic() + 30
        while len(monitor.details.get("samples", [])) < 8 and time.monotonic() < deadline:
            time.sleep(0.1)
        samples = monitor.details["samples"]
        record = monitor.watcher.records[1]
        assert [s["index"] for s in samples] == record.result.indices[:8].tolist()
        assert all(s["image"].startswith("data:image/png;base64,") for s in samples)
        assert monitor.details["note"] == "the 8 most anomalous samples, highest score first"
        assert any(row[0] == "verdict" and "drift" in row[1] for row in monitor.details["rows"])
        again = shell.run_line_magic("scanflow", "checker start serve --reference reference.npy")
        assert again.watcher is monitor.watcher, "a running checker is reused, not doubled"
        capsys.readouterr()
        shell.run_line_magic("scanflow", "checker status serve")
        assert "watching, 2 batches checked, 1 drifted" in capsys.readouterr().out
    finally:
        started = time.monotonic()
        shell.run_line_magic("scanflow", "checker stop serve")
        assert time.monotonic() - started < 30  # promptly, not hanging on the watcher (slow on a busy machine)
    assert "checker of 'serve' stopped" in capsys.readouterr().out
    assert (app_dir / ".scanflow" / "checker" / "serve" / "detector" / "detector.json").is_file()


def test_reference_logged_to_mlflow_and_the_cached_detector(shell, digits_app):
    from scanflow_nb.check.supervise import fitted_detector

    app_dir, clean, _ = digits_app
    shell.run_line_magic("scanflow", f"app {app_dir}")
    app = shell.magics_manager.registry["ScanflowMagics"].current_app
    with pytest.raises(UsageError, match="no reference data logged in experiment 'serve'"):
        shell.run_line_magic("scanflow", "checker start serve")
    tr.log_reference(np.load(app_dir / "reference.npy"), app.tracking_uri("serve"), "serve")
    first = fitted_detector(app, "serve")
    saved = app_dir / ".scanflow" / "checker" / "serve" / "detector" / "state.npz"
    stamp = saved.stat().st_mtime_ns
    second = fitted_detector(app, "serve")
    assert saved.stat().st_mtime_ns == stamp, "the same reference must reuse the saved detector"
    assert second.score(clean).p_value == pytest.approx(first.score(clean).p_value)


def test_user_errors_are_one_line(shell, digits_app):
    app_dir, _, _ = digits_app
    shell.run_line_magic("scanflow", f"app {app_dir}")
    with pytest.raises(UsageError, match="unknown workflow 'nope'"):
        shell.run_line_magic("scanflow", "checker start nope --reference reference.npy")
    with pytest.raises(UsageError, match="reference data file .*missing.npy' does not exist"):
        shell.run_line_magic("scanflow", "checker start serve --reference missing.npy")
    with pytest.raises(UsageError, match="no checker was started for workflow 'other'"):
        shell.run_line_magic("scanflow", "checker status other")
    with pytest.raises(UsageError):
        shell.run_line_magic("scanflow", "checker pause serve")
    (app_dir / "bad.npy").write_text("not numpy")
    with pytest.raises(UsageError, match="not a numpy .npy array"):
        shell.run_line_magic("scanflow", "checker start serve --reference bad.npy")


def test_monitor_updates_from_another_thread():
    from scanflow_nb.check import DriftResult
    from scanflow_nb.widgets.drift import DriftMonitor

    monitor = DriftMonitor()
    assert "no batch checked yet" in monitor.alert

    def feed():
        for i, p in enumerate([0.4, 0.3, 0.001]):
            res = DriftResult.build(p, 1.0 + i, np.arange(5.0), 3.5, 0.05)
            monitor.add(CheckRecord(f"b{i}", f"c{i}", res, None, time.time(), 0.5))
        monitor.add(CheckRecord("b3", "c3", None, "wrong shape", time.time(), 0.5))

    thread = threading.Thread(target=feed)
    thread.start()
    assert monitor.wait(4, timeout=30) is monitor  # the points of all four are there once it returns
    assert [p["drift"] for p in monitor.points] == [False, False, True, False]
    assert "3 of 4 batches" not in monitor.alert and "4 batches checked, 1 drifted" in monitor.alert
    assert [p["p_value"] for p in monitor.points] == [0.4, 0.3, 0.001, None] and monitor.points[3]["error"]
    monitor.note("tracker unreachable; retrying in 2.0 s")
    assert "retrying" in monitor.problem
    with pytest.raises(ScanflowError, match=r"4 of 5 batches checked after 0.2 s; latest problem: tracker unreach"):
        monitor.wait(5, timeout=0.2)
    monitor.selected = "b2"  # no watcher: the check's verdict is shown, and why the samples are not
    deadline = time.monotonic() + 10
    while monitor.details["note"] == "reading the batch…" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "no watcher, so no tracker to read the batch from" in monitor.details["note"]
    assert ["verdict", "<b>drift</b>: p = 0.001 (alpha 0.05)"] in monitor.details["rows"]


def test_a_table_reference_picks_the_tabular_detector(shell, app_dir, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    frame = load_tumours()[0].sample(frac=1.0, random_state=0)
    ref, pool = frame.iloc[:400], frame.iloc[400:]
    app_dir.mkdir(parents=True)
    ref.to_parquet(app_dir / "reference.parquet")
    ref.to_csv(app_dir / "reference.csv", index=False)
    (app_dir / "broken.parquet").write_text("not parquet")
    (app_dir / "scanflow.yaml").write_text(yaml.safe_dump({"version": 1, "workflows": [{"name": "serve"}]}))
    shell.run_line_magic("scanflow", f"app {app_dir}")
    app = shell.magics_manager.registry["ScanflowMagics"].current_app
    uri = app.tracking_uri("serve")
    with pytest.raises(UsageError, match="broken.parquet' is not a readable table"):
        shell.run_line_magic("scanflow", "checker start serve --reference broken.parquet")
    with pytest.raises(UsageError, match="give a .npy array or a .parquet / .csv table"):
        shell.run_line_magic("scanflow", "checker start serve --reference scanflow.yaml")

    monitor = shell.run_line_magic("scanflow", "checker start serve --reference reference.parquet --every 0.3")
    assert "TabularDetector(" in capsys.readouterr().out
    try:
        shifted, _ = shift_table(pool.iloc[:60], "new_category", ref, np.random.default_rng(0))
        tr.log_batch(shifted, uri, "serve")
        deadline = time.monotonic() + 60
        while not monitor.watcher.records and time.monotonic() < deadline:
            time.sleep(0.1)
        (record,) = monitor.watcher.records
        assert record.result.drifted[0] == "scanner"
        assert [(f.kind, f.column) for f in record.result.findings] == [("unseen_category", "scanner")]
        capsys.readouterr()
        shell.run_line_magic("scanflow", "checker status serve")
        assert "1 batches checked, 1 drifted, 0 alarms, 1 data-quality findings" in capsys.readouterr().out
    finally:
        shell.run_line_magic("scanflow", "checker stop serve")

    from scanflow_nb.check.supervise import fitted_detector

    assert type(fitted_detector(app, "serve", "reference.csv")).__name__ == "TabularDetector"
    run_id = tr.log_reference(ref, uri, "serve")
    logged = fitted_detector(app, "serve", f"runs:/{run_id}/reference/reference.parquet")
    assert type(logged).__name__ == "TabularDetector" and logged.schema_.categorical == ["size_band", "scanner"]
    assert type(fitted_detector(app, "serve")).__name__ == "TabularDetector", "the newest logged reference"
    with pytest.raises(UsageError, match="'size_band' is categorical: use TabularDetector"):
        shell.run_line_magic("scanflow", "checker start serve --detector ks")
    with pytest.raises(UsageError, match="needs the model it watches"):
        shell.run_line_magic("scanflow", "checker start serve --detector model_output")


def test_a_model_output_checker_refuses_the_models_own_training_data(shell, digits_app, capsys):
    """The trap of issue 14: outputs on training data are over-confident, so every fresh batch looks drifted."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    app_dir, clean, _ = digits_app
    shell.run_line_magic("scanflow", f"app {app_dir}")
    app = shell.magics_manager.registry["ScanflowMagics"].current_app
    uri = app.tracking_uri("serve")
    X, y = load_digits()
    flat = X.reshape(len(X), -1)
    experiment = tr.experiment_id(tr.client_for(uri), "serve")
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=experiment) as training:
            model = LogisticRegression(max_iter=2000).fit(flat[:600], y[:600])
            mlflow.sklearn.log_model(model, name="model", registered_model_name="guarded")
    finally:
        mlflow.set_tracking_uri(None)
    tr.client_for(uri).set_registered_model_alias("guarded", "champion", "1")
    tr.log_reference(flat[:600], uri, "serve", run_id=training.info.run_id)  # the training rows, in the same run
    for model_uri in ("models:/guarded@champion", "models:/guarded/1", f"runs:/{training.info.run_id}/model"):
        with pytest.raises(UsageError, match="logged by the run that trained") as refused:
            shell.run_line_magic("scanflow", f"checker start serve --detector model_output --model {model_uri}")
        assert "held-out data" in str(refused.value)
    assert not (app_dir / ".scanflow" / "checker" / "serve").exists(), "nothing was fitted on the training data"

    tr.log_reference(flat[1200:1500], uri, "serve")  # held out: the newest reference wins
    capsys.readouterr()
    shell.run_line_magic("scanflow", "checker start serve --detector model_output --model models:/guarded/1")
    try:
        assert "ModelOutputDetector" in capsys.readouterr().out
    finally:
        shell.run_line_magic("scanflow", "checker stop serve")
