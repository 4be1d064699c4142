"""`%scanflow label` in a real IPython shell."""

import pytest
from IPython.core.error import UsageError

import scanflow_nb.magics.label  # noqa: F401  (registers the subcommand until the lead wires it in)
from scanflow_nb import App, Workflow
from scanflow_nb import Improver as ImproverSpec
from scanflow_nb.improve import LabelStore

SETUP = """
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from scanflow_nb.improve import ActiveLearner
X, y = load_digits(return_X_y=True)
imp = ActiveLearner(LogisticRegression(max_iter=300), X_labeled=X[:20] / 16, y_labeled=y[:20], X_pool=X[20:200] / 16)
texts = [f"digit sample {i}" for i in range(180)]
"""


def test_label_opens_a_panel_that_stores_in_the_app_and_logs_to_the_workflow(shell, app_dir, capsys):
    App(app_dir, [Workflow("serve", improver=ImproverSpec(strategy="margin", k=3))]).save()
    shell.run_line_magic("scanflow", f"app {app_dir}")
    shell.run_cell(SETUP)
    panel = shell.run_line_magic("scanflow", "label imp --session s1 -w serve --samples texts --test X y")
    assert panel.retrain_every == 3 and panel.experiment == "serve" and panel.tracking_uri.startswith("sqlite:")
    assert panel.improver.strategy == "margin" and panel.session.queries[0].used == "margin"  # the workflow's spec
    assert "digit sample" in panel.widget.sample["html"]
    first = panel.current
    panel.press("5")
    assert LabelStore(app_dir / ".scanflow" / "labels.sqlite").actions("s1") == [(first, "label", 5)]
    again = shell.run_line_magic("scanflow", "label imp --session s1")  # same session: resumes
    assert again.n_labels == 1 and again.retrain_every == 10


def test_label_errors_are_one_line(shell, app_dir):
    shell.run_line_magic("scanflow", f"app {app_dir}")
    shell.run_cell(SETUP)
    with pytest.raises(UsageError, match="no variable 'nope' in the notebook"):
        shell.run_line_magic("scanflow", "label nope")
    with pytest.raises(UsageError, match="'texts' is a list, not a scanflow_nb.improve.ActiveLearner"):
        shell.run_line_magic("scanflow", "label texts")
    with pytest.raises(UsageError, match="unknown workflow 'ghost'"):
        shell.run_line_magic("scanflow", "label imp -w ghost")
    with pytest.raises(UsageError, match="retrain_every must be a whole number >= 1"):
        shell.run_line_magic("scanflow", "label imp --every 0")
