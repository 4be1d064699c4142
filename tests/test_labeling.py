"""The labeling panel through its Python methods: the same calls its buttons and keys make."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from scanflow_nb.errors import ValidationError
from scanflow_nb.improve import ActiveLearner, LabelingSession, LabelStore
from scanflow_nb.widgets.labeling import LabelingPanel, image_png

X, Y = load_digits(return_X_y=True)
X = X / 16.0
SEED = np.array([np.flatnonzero(c == Y)[0] for c in range(10)])
POOL = np.setdiff1d(np.arange(300), SEED)  # 290 candidates
TEST = np.arange(1400, 1797)


def improver(estimator=None, pool=POOL, seed=SEED, **options):
    return ActiveLearner(
        estimator or LogisticRegression(max_iter=300),
        X_labeled=X[seed],
        y_labeled=Y[seed],
        X_pool=X[pool].reshape(-1, 8, 8),
        **options,
    )


def truth(sample):
    return int(Y[POOL][sample])


@pytest.fixture
def store(tmp_path):
    return LabelStore(tmp_path / "labels.sqlite")


def test_label_stores_at_once_and_shows_the_next_sample(store):
    panel = LabelingPanel(improver(), store=store, retrain_every=50)
    first = panel.current
    view = panel.widget
    assert view.sample["id"] == first and view.sample["image"].startswith("data:image/png;base64,iVBOR")
    assert re.fullmatch(r"\d \(\d+%\)", view.guess)  # the model's guess and its confidence
    panel.label(truth(first))
    assert store.labels("default") == {first: truth(first)}
    assert panel.current != first and first in panel.improver.taught
    assert view.sample["id"] == panel.current
    assert panel.n_labels == 1 and view.progress["done"] == 1 and "1 / 290 labeled" in view.counts


def test_keys_digit_enter_backspace_and_s(store):
    panel = LabelingPanel(improver(), store=store, retrain_every=50)
    a = panel.current
    panel.press("7")
    b = panel.current
    guess = panel.improver.guess([b])[0][0]
    panel.press("Enter")
    c = panel.current
    panel.press("s")
    assert store.actions("default") == [(a, "label", 7), (b, "label", guess), (c, "skip", None)]
    panel.press("Backspace")
    panel.press("Backspace")
    assert panel.current == b and store.actions("default") == [(a, "label", 7)]
    assert b in panel.improver.pool_ids and c not in panel.skipped
    panel.press("x")  # unbound keys do nothing
    assert store.actions("default") == [(a, "label", 7)]


def test_buttons_click_through_the_same_methods(store):
    """What labeling.js sends for a click reaches the panel as it does from the browser (the widget's messages)."""
    panel = LabelingPanel(improver(), store=store, retrain_every=50)
    first = panel.current
    buttons = [c["label"] for c in panel.widget.classes]
    panel.widget._handle_custom_msg({"action": "label", "index": buttons.index("4")}, [])
    panel.widget._handle_custom_msg({"action": "skip"}, [])
    panel.widget._handle_custom_msg({"action": "undo"}, [])
    panel.widget._handle_custom_msg({"action": "press", "key": "s"}, [])
    panel.widget._handle_custom_msg({"action": "undo"}, [])
    assert store.actions("default") == [(first, "label", 4)]


def test_multi_step_undo_then_nothing_to_undo(store):
    panel = LabelingPanel(improver(), store=store, retrain_every=50)
    shown = []
    for _ in range(3):
        shown.append(panel.current)
        panel.label(truth(panel.current))
    for expected in reversed(shown):
        panel.undo()
        assert panel.current == expected
    assert panel.n_labels == 0 and panel.improver.taught == {} and store.actions("default") == []
    with pytest.raises(ValidationError, match="nothing to undo"):
        panel.undo()
    panel.press("Backspace")  # from the keyboard: shown in the panel, not raised
    assert "nothing to undo" in panel.widget.status["text"] and panel.errors


def test_label_outside_fixed_classes_is_refused_and_nothing_is_lost(store):
    panel = LabelingPanel(improver(classes=list(range(10))), store=store, retrain_every=50)
    panel.label(truth(panel.current))
    current, before = panel.current, store.actions("default")
    with pytest.raises(ValidationError, match="label 12 is not one of the classes"):
        panel.label(12)
    with pytest.raises(ValidationError, match="label '3' is not one of the classes"):
        panel.label("3")
    assert panel.current == current and store.actions("default") == before and panel.n_labels == 1
    assert store.classes("default") == list(range(10)) and panel.session.classes == list(range(10))


def test_a_label_of_a_new_class_adds_it_once_and_a_reopened_session_keeps_it(store):
    no_sevens = SEED[Y[SEED] != 7]
    imp = improver(seed=no_sevens)
    session = LabelingSession(imp, store=store, session="grow", retrain_every=50)
    assert 7 not in session.classes
    said = []
    session.watch(lambda: said.append(session.message[0]) if session.message[0] not in said[-1:] else None)
    first = session.current
    session.label(7)  # the person says: this one is a 7 (a class the start labels missed)
    assert session.classes[-1] == 7 and imp.taught == {first: 7} and store.classes("grow")[-1] == 7
    assert said[-1] == f"new class 7 added: the classes are now {session.classes}" and session.errors == []
    session.label(7)
    assert sum("new class 7" in m for m in said) == 1  # said once
    with pytest.raises(ValidationError, match="label 'seven' is text"):
        session.label("seven")
    session.finish().join(60)
    assert 7 in imp.model.classes_

    again = improver(seed=no_sevens)  # a fresh kernel: the classes come back in their order, then the labels
    reopened = LabelingSession(again, store=store, session="grow", retrain_every=50)
    assert reopened.classes == session.classes and reopened.n_labels == 2 and again.taught == imp.taught


def test_the_session_records_which_strategy_chose_what_was_shown(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    session = LabelingSession(improver(), store=store, retrain_every=3, tracking_uri=uri, experiment="digits")
    for _ in range(6):
        session.label(truth(session.current))
    finishing = session.finish()
    finishing.join(300)  # MLflow's first store takes a while on a busy machine
    assert not finishing.is_alive(), "the session was not logged within 300 s"
    used = [q.used for q in session.queries if q.answers]
    assert used[0] == "typical" and session.queries[0].strategy == "auto" and session.errors == []
    client = MlflowClient(uri)
    run = client.get_run(session.run_id)
    assert run.data.params["strategy"] == "auto" and "typical x" in run.data.tags["scanflow.strategies_used"]
    history = client.get_metric_history(session.run_id, "labels.typical")
    assert history and history[0].step == 10  # the first query came after the 10 start labels
    path = client.download_artifacts(session.run_id, "queries.csv", str(tmp_path))
    header, first, *_ = Path(path).read_text().splitlines()
    assert header.startswith("query,labels_before,strategy,used,reason") and ",auto,typical," in first


class GatedLogistic(LogisticRegression):
    """A learner whose fit waits for the test to open a gate: makes 'while a retrain runs' deterministic."""

    gate = threading.Event()

    def fit(self, X, y, sample_weight=None):
        assert self.gate.wait(30), "the test never opened the gate"
        return super().fit(X, y, sample_weight)


def test_retrain_runs_in_the_background_every_k_labels(store):
    GatedLogistic.gate.set()
    imp = improver(GatedLogistic(max_iter=300))
    panel = LabelingPanel(imp, store=store, retrain_every=3, X_test=X[TEST], y_test=Y[TEST])
    GatedLogistic.gate.clear()
    for _ in range(3):
        panel.label(truth(panel.current))
    assert panel.retraining and "retraining" in panel.widget.status["text"]
    for _ in range(2):  # the panel keeps serving samples while the model trains
        panel.label(truth(panel.current))
    assert panel.retraining and panel.n_labels == 5 and len(store.labels("default")) == 5
    GatedLogistic.gate.set()
    panel.wait()
    assert [n for n, _ in panel.scores] == [10, 13]  # after the retrain on 3 labels (plus 10 seeds)
    assert "score after retrain on 13 labels" in panel.widget.status["text"]
    panel.label(truth(panel.current))  # 3 labels since the last retrain began: the next one starts
    panel.wait()
    assert [n for n, _ in panel.scores] == [10, 13, 16]
    panel.label(truth(panel.current))
    assert not panel.retraining  # 1 label since the last retrain < 3
    panel.finish().join(30)
    assert panel.scores[-1][0] == 17 and imp.n_trained == 17 and "finished" in panel.widget.status["text"]


def test_a_failing_retrain_is_reported_in_the_panel(store):
    imp = improver()
    panel = LabelingPanel(imp, store=store, retrain_every=1)
    imp.estimator = LogisticRegression(max_iter=-1)
    panel.label(truth(panel.current))
    panel.wait()
    assert "retrain failed" in panel.widget.status["text"] and "max_iter" in panel.errors[-1]
    assert store.labels("default")  # the label itself is kept


def test_resume_after_the_kernel_is_killed(tmp_path):
    db = tmp_path / "labels.sqlite"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_labeling import LabelingPanel, improver, truth
        panel = LabelingPanel(improver(), store={str(db)!r}, session="s1", retrain_every=4)
        for step in range(8):
            if step == 5:
                panel.skip()
            else:
                panel.label(truth(panel.current))
        panel.undo()
        print(panel.current, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    # a fresh interpreter's imports and retrains took 100 s on a loaded 2-core machine: room to spare
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    undone = int(done.stdout.split()[-1])
    stored = LabelStore(db).actions("s1")
    assert [kind for _, kind, _ in stored] == ["label"] * 5 + ["skip"] + ["label"]
    imp = improver()
    panel = LabelingPanel(imp, store=db, session="s1", retrain_every=4)
    labeled = {s: label for s, k, label in stored if k == "label"}
    assert panel.n_labels == 6 and imp.taught == labeled and imp.n_trained == 16
    assert panel.skipped == {stored[5][0]}
    assert panel.current not in labeled and panel.current not in panel.skipped
    assert undone in imp.pool_ids  # the undone label stayed undone
    panel.undo()  # undo works across the restart
    assert panel.n_labels == 5 and stored[-1][0] not in imp.taught


def test_reopening_a_session_with_another_pool_is_refused(store):
    LabelingPanel(improver(), store=store, session="s")
    with pytest.raises(ValidationError, match="made for another pool"):
        LabelingPanel(improver(pool=POOL[:100]), store=store, session="s")
    LabelingPanel(improver(pool=POOL[:100]), store=store, session="s2")


def test_empty_pool_shows_nothing_left(store):
    imp = improver(pool=POOL[:2])
    panel = LabelingPanel(imp, store=store, retrain_every=10, budget=5)
    panel.label(truth(panel.current))
    panel.skip()
    assert panel.current is None and panel.widget.sample == {}
    with pytest.raises(ValidationError, match="nothing left to label"):
        panel.label(3)
    assert panel.widget.idle  # class buttons, keys and skip do nothing


def test_budget_reached_finishes_with_a_final_retrain(store):
    finished = []
    panel = LabelingPanel(improver(), store=store, retrain_every=100, budget=3, on_finish=finished.append)
    for _ in range(3):
        panel.label(truth(panel.current))
    panel.wait()
    assert finished == [panel.session] and panel.finished and panel.improver.n_trained == 13


def test_tabular_and_text_samples():
    import pandas as pd

    from scanflow_nb.widgets.labeling import is_image, sample_html

    frame = pd.DataFrame({"alcohol": [13.2, 12.1], "hue": [1.04, 0.9]})
    assert "<th style='text-align:left;padding-right:1em'>alcohol</th><td>13.2</td>" in sample_html(frame.iloc[0])
    assert "<th style='text-align:left;padding-right:1em'>x1</th><td>0.9</td>" in sample_html(np.array([12.1, 0.9]))
    assert sample_html("a <b> & c") == "<div style='white-space:pre-wrap;max-width:40em'>a &lt;b&gt; &amp; c</div>"
    assert is_image(np.zeros((8, 8))) and is_image(np.zeros((4, 4, 3))) and not is_image(np.zeros(8))


def test_text_samples_shown_for_vectorised_features(store):
    texts = [f"review number {i}: " + ("great" if y % 2 else "awful") for i, y in enumerate(Y[POOL])]
    panel = LabelingPanel(improver(), store=store, samples=texts)
    assert "image" not in panel.widget.sample and texts[panel.current] in panel.widget.sample["html"]


def test_images_render_as_png_of_any_square_grey_or_rgb_array():
    import io

    from PIL import Image

    grey = Image.open(io.BytesIO(image_png(np.eye(8), size=160)))
    rgb = Image.open(io.BytesIO(image_png(np.random.default_rng(0).integers(0, 255, (32, 32, 3)), size=160)))
    assert grey.size == (160, 160) and grey.mode == "L" and grey.getpixel((0, 0)) == 255
    assert rgb.size == (160, 160) and rgb.mode == "RGB"


def test_finish_logs_the_session_to_mlflow(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    panel = LabelingPanel(
        improver(), store=store, session="mlf", tracking_uri=uri, experiment="digits", X_test=X[TEST], y_test=Y[TEST]
    )
    for _ in range(4):
        panel.label(truth(panel.current))
    panel.skip()
    panel.finish().join(120)
    assert panel.errors == [] and panel.run_id
    client = MlflowClient(uri)
    run = client.get_run(panel.run_id)
    assert run.data.metrics["labels"] == 4 and run.data.metrics["skips"] == 1
    assert run.data.metrics["score"] == pytest.approx(panel.scores[-1][1])
    path = client.download_artifacts(panel.run_id, "labels.csv", str(tmp_path))
    lines = Path(path).read_text().splitlines()
    assert lines[0] == "seq,sample,kind,label,at" and len(lines) == 6 and ",skip," in lines[-1]


def test_numpy_labels_are_stored_as_plain_values(store):
    panel = LabelingPanel(improver(), store=store, retrain_every=50)
    first = panel.current
    panel.label(np.int64(5))
    assert store.actions("default") == [(first, "label", 5)]


def test_a_store_that_cannot_be_written_loses_nothing(tmp_path):
    from scanflow_nb.improve import LabelStoreError

    bad = tmp_path / "not-a-db.sqlite"
    bad.write_text("this is not a database" * 100)
    with pytest.raises(LabelStoreError, match="cannot use .* as a label store"):
        LabelingPanel(improver(), store=bad)
    store = LabelStore(tmp_path / "labels.sqlite")
    panel = LabelingPanel(improver(), store=store, retrain_every=50)
    first = panel.current
    store.close()  # e.g. the disk went away: writing fails
    with pytest.raises(LabelStoreError, match=f"cannot store the label of sample {first}"):
        panel.label(3)
    assert panel.current == first and first in panel.improver.pool_ids and panel.n_labels == 0
