"""The labeling panel's view: number keys that stay put as classes are added, a new class typed in the panel,
and what the panel says where widgets cannot load. Driven through the messages labeling.js sends."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from scanflow_nb.improve import ActiveLearner, LabelStore
from scanflow_nb.widgets.labeling import LabelingPanel, _as_class, _key_map

X, Y = load_digits(return_X_y=True)
X = X / 16.0
SEED = np.array([np.flatnonzero(c == Y)[0] for c in (0, 1, 2)])
POOL = np.flatnonzero(Y < 4)[10:60]


def panel(tmp_path, **learner):
    improver = ActiveLearner(
        LogisticRegression(max_iter=300), X_labeled=X[SEED], y_labeled=Y[SEED], X_pool=X[POOL], **learner
    )
    return LabelingPanel(improver, store=LabelStore(tmp_path / "labels.sqlite"), retrain_every=50)


def test_number_keys_stay_on_their_class_when_classes_are_added():
    assert _key_map([0, 1, 2]) == {"0": 0, "1": 1, "2": 2}
    before = _key_map(["cat", "dog"])
    assert before == {"1": "cat", "2": "dog"}
    assert _key_map(["ant", "cat", "dog"], before) == {"1": "cat", "2": "dog", "3": "ant"}
    assert _key_map([0, 1, 2, 10], _key_map([0, 1, 2])) == {"0": 0, "1": 1, "2": 2, "3": 10}
    assert _key_map([f"c{i}" for i in range(12)]).keys() == set("1234567890")  # the last two get no key


def test_a_typed_class_takes_the_type_of_the_known_classes():
    assert _as_class(" 10 ", [0, 1]) == 10 and _as_class("0.5", [0.0, 1.0]) == 0.5
    assert _as_class("bird", [0, 1]) == "bird" and _as_class("bird", ["cat"]) == "bird"


def test_a_class_the_learner_cannot_take_is_one_clear_message_and_nothing_is_stored(tmp_path):
    labeling = panel(tmp_path, classes=[0, 1, 2])  # explicit classes: a new one is refused
    first = labeling.current
    labeling.widget._handle_custom_msg({"action": "add", "name": "3"}, [])
    assert labeling.widget.status["error"] and "3" in labeling.widget.status["text"]
    assert labeling.current == first and labeling.store.actions("default") == []
    labeling.widget._handle_custom_msg({"action": "add", "name": "  "}, [])
    assert labeling.widget.status == {"text": "type the name of the new class first", "error": True}


def test_a_new_class_labels_the_sample_and_gets_a_button_and_a_key(tmp_path):
    labeling = panel(tmp_path)  # classes taken from the labels: 0, 1, 2
    first = labeling.current
    labeling.widget._handle_custom_msg({"action": "add", "name": "3"}, [])
    if labeling.store.actions("default") == []:
        pytest.skip(f"the learner does not take new classes yet: {labeling.widget.status['text']}")
    assert labeling.store.actions("default") == [(first, "label", 3)]
    assert {"label": "3", "key": "3"} in labeling.widget.classes
    labeling.widget._handle_custom_msg({"action": "press", "key": "3"}, [])
    assert [label for _, _, label in labeling.store.actions("default")] == [3, 3]


def test_where_widgets_cannot_load_the_panel_says_what_it_is(tmp_path):
    from IPython.core.formatters import DisplayFormatter

    labeling = panel(tmp_path)
    data, _ = DisplayFormatter().format(labeling)
    assert "application/vnd.jupyter.widget-view+json" in data
    text = data["text/plain"]
    assert text.startswith("[labeling panel (session default · strategy auto): an interactive widget")
    assert f"0 / 50 labeled · 0 skipped · 50 in the pool; showing sample {labeling.current}" in text
