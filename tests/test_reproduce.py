"""The reproduction experiment on real digits, with the KS detector (no TensorFlow: quick)."""

import numpy as np
import pytest

from scanflow_nb.datasets import CORRUPTIONS
from scanflow_nb.errors import ValidationError
from scanflow_nb.reproduce import CLEAN, SMALL_CORRUPTIONS, reproduce, small_mode, split_sizes


@pytest.fixture(scope="module")
def result():
    return reproduce("digits", corruptions=["rotate", "brightness"], detector="ks", small=True, repeats=2, echo=None)


def test_clean_batch_is_not_drift_and_keeps_the_clean_accuracy(result):
    clean = result.row(CLEAN)
    assert clean.drift is False and clean.p_value > 0.05
    assert clean.labeled == 0 and clean.active is None and clean.random is None
    assert clean.before == pytest.approx(result.clean_accuracy)
    assert result.clean_accuracy > 0.9  # logistic regression on 300 clean digits


def test_corrupted_batches_are_detected_hurt_accuracy_and_get_k_labels(result):
    for name in ("rotate", "brightness"):
        row = result.row(name)
        assert row.drift and row.p_value < 0.05
        assert 0 < row.anomalies <= result.sizes["batch"]
        assert row.labeled == min(result.k, row.anomalies) == 10
        assert row.before < result.clean_accuracy - 0.05
        assert 0.0 <= row.active <= 1.0 and 0.0 <= row.random <= 1.0
        assert row.gain == pytest.approx(row.active - row.random)
        # both sides are the mean of as many draws (the comparison is paired), and every draw is kept
        assert len(row.active_draws) == len(row.random_draws) == result.repeats == 2
        assert row.active == pytest.approx(np.mean(row.active_draws))
        assert row.random == pytest.approx(np.mean(row.random_draws))
    assert result.row("rotate").before < 0.6  # rotating 8x8 digits by ~42 degrees breaks the classifier


def test_labels_of_the_corruption_help_and_cost_little_on_clean_data(result):
    improved = result.improved
    assert [r.corruption for r in improved] == ["rotate", "brightness"]
    assert np.mean([r.active for r in improved]) > np.mean([r.before for r in improved])
    assert all(r.clean_after > result.clean_accuracy - 0.05 for r in improved)


def test_summary_and_tables_say_what_the_rows_say(result):
    s = result.summary()
    assert s["corruptions"] == 2 and s["detected"] == 2 and s["improved"] == 2
    assert s["active_beats_random"] == sum(r.active > r.random for r in result.improved)
    text = result.table()
    lines = text.splitlines()
    assert lines[0].split()[0] == "corruption"
    rotate = next(line for line in lines if line.startswith("rotate"))
    assert f"{result.row('rotate').active:.3f}" in rotate and f"{result.row('rotate').random:.3f}" in rotate
    assert "drift found in 2 of 2 corrupted batches" in text


def test_rst_table_is_valid_restructuredtext(result):
    from docutils.core import publish_doctree
    from docutils.utils import Reporter

    tree = publish_doctree(
        result.table("rst"),
        settings_overrides={"report_level": Reporter.WARNING_LEVEL, "halt_level": Reporter.WARNING_LEVEL},
    )
    rows = list(tree.findall(lambda node: node.tagname == "row"))
    assert len(rows) == 1 + len(result.rows)
    assert rows[2].astext().split("\n")[0] == "rotate"


def test_same_seed_same_numbers_and_results_logged_to_mlflow(tmp_path, monkeypatch, result):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    again = reproduce(
        "digits",
        corruptions=["rotate", "brightness"],
        detector="ks",
        small=True,
        repeats=2,
        echo=None,
        tracking_uri=uri,
        experiment="repro",
    )
    assert [(r.corruption, r.anomalies, r.before, r.active, r.random) for r in again.rows] == [
        (r.corruption, r.anomalies, r.before, r.active, r.random) for r in result.rows
    ]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("repro").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"digits/none", "digits/rotate", "digits/brightness"}
    rotate = by_name["digits/rotate"].data
    assert rotate.params["k"] == "10" and rotate.params["severity"] == "4" and rotate.params["strategy"] == "auto"
    # k = 10: one query of 10 in each of the 2 draws
    assert rotate.params["strategy_used"] == result.row("rotate").used == "typical x2"
    assert rotate.params["step"] == "10"
    assert rotate.metrics["accuracy_active"] == pytest.approx(result.row("rotate").active)
    assert "accuracy_active" not in by_name["digits/none"].data.metrics


def test_calls_sharing_detectors_fit_each_detector_once(result):
    detectors = {}
    runs = [
        reproduce(
            "digits", corruptions=["rotate"], detector="ks", small=True, repeats=1, k=k, echo=None, detectors=detectors
        )
        for k in (5, 10)
    ]
    assert list(detectors) == [("digits", 0, True, "ks")]  # fitted by the first call, used by the second
    assert [r.labeled for r in runs[0].improved + runs[1].improved] == [5, 10]
    for run in runs:  # the same detector as a run of its own gives the same verdicts
        assert [(r.p_value, r.anomalies) for r in run.rows] == [(r.p_value, r.anomalies) for r in result.rows[:2]]


def test_small_mode_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("SCANFLOW_SMALL", "1")
    assert small_mode()
    monkeypatch.setenv("SCANFLOW_SMALL", "0")
    assert not small_mode()
    monkeypatch.delenv("SCANFLOW_SMALL")
    assert not small_mode()
    assert set(SMALL_CORRUPTIONS) <= set(CORRUPTIONS)
    assert sum(split_sizes(1797, False, "digits").values()) <= 1797


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dataset": "cifar"}, "unknown dataset 'cifar'"),
        ({"corruptions": ["rotate", "smudge"]}, "unknown corruption 'smudge'"),
        ({"k": 0}, "k must be a whole number"),
        ({"repeats": 1.5}, "repeats must be a whole number"),
        ({"severity": 6}, "severity runs from 1 to 5, got 6"),
        ({"severity": 0}, "severity must be a whole number >= 1"),
        ({"step": 0}, "step must be a whole number >= 1"),
        ({"strategy": "random"}, "strategy must be one of: auto, typical, margin, uncertainty, entropy, batch"),
        ({"embedding": "checker"}, "with detector 'ks'"),
        ({"embedding": "umap"}, "embedding must be 'pca' or"),
    ],
)
def test_bad_settings_give_one_clear_error(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        reproduce(**{"detector": "ks", "small": True, "echo": None, **kwargs})


def test_unknown_row_and_table_format_are_refused(result):
    with pytest.raises(ValidationError, match="no row for corruption 'fog'"):
        result.row("fog")
    with pytest.raises(ValidationError, match="'text' or 'rst'"):
        result.table("html")
