"""`%scanflow graph` in a real IPython shell: widget, text tree, export and one-line errors."""

from __future__ import annotations

import shutil

import pytest
from IPython.core.error import UsageError

needs_dot = pytest.mark.skipif(
    not shutil.which("dot"), reason="graphviz's `dot` program is not installed (apt-get install graphviz)"
)


@pytest.fixture
def shell(shell, tmp_path, monkeypatch):
    """conftest's real InteractiveShell with the extension loaded, and a fresh app in tmp_path."""
    monkeypatch.chdir(tmp_path)
    shell.run_line_magic("scanflow", f"app {tmp_path / 'app'}")
    return shell


def declare(ip):
    ip.run_line_magic("scanflow", "workflow pipeline")
    ip.run_line_magic("scanflow", "workflow evaluate --parallel --parent pipeline")
    ip.run_cell_magic("scanflow", "executor prepare --workflow pipeline -p rows=5", "print('prepared')\n")
    ip.run_cell_magic("scanflow", "executor a --workflow evaluate", "print('a')\n")
    ip.run_cell_magic("scanflow", "executor b --workflow evaluate", "raise SystemExit(2)\n")


@needs_dot
def test_graph_shows_the_widget_with_the_last_runs_states(shell):
    declare(shell)
    widget = shell.run_line_magic("scanflow", "graph")
    assert type(widget).__name__ == "GraphWidget" and "0/3 done" in widget.summary
    shell.run_line_magic("scanflow", "run pipeline --quiet --no-graph")
    widget = shell.run_line_magic("scanflow", "graph pipeline")
    assert widget.nodes["evaluate/b"]["state"] == "failed"
    assert 'class="node sf&#45;executor sf&#45;failed"' in widget._repr_svg_()
    assert "3/3 done · 1 failed (evaluate/b)" in widget.summary
    assert widget.selected == "evaluate/b"


def test_graph_text_tree_and_summary(shell, capsys):
    declare(shell)
    shell.run_line_magic("scanflow", "graph --text")
    assert capsys.readouterr().out.splitlines()[-1] == "workflow 'pipeline' has not run yet"
    shell.run_line_magic("scanflow", "run pipeline --quiet --no-graph")
    capsys.readouterr()
    shell.run_line_magic("scanflow", "graph evaluate --text")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "evaluate  (parallel)"
    assert lines[1].startswith("├── a  [succeeded · ") and lines[2].startswith("└── b  [failed · ")
    assert lines[3].startswith("last run of 'pipeline' failed: 2/2 done · 1 failed (evaluate/b)")


@needs_dot
def test_graph_save_writes_the_file(shell, tmp_path, capsys):
    declare(shell)
    shell.run_line_magic("scanflow", "graph pipeline --text --save out/pipeline.svg")
    assert (tmp_path / "out" / "pipeline.svg").read_text().count('class="node sf&#45;executor') == 3
    assert f"saved {tmp_path / 'out' / 'pipeline.svg'}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "line, message",
    [
        ("graph nowhere", "unknown workflow 'nowhere' (known: none declared yet)"),
        ("graph --save g.jpg", "no workflows yet: declare one with %scanflow workflow NAME"),
    ],
)
def test_graph_errors_are_one_line(shell, line, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        shell.run_line_magic("scanflow", line)


def test_graph_needs_a_name_when_there_are_several_workflows(shell, tmp_path):
    shell.run_line_magic("scanflow", "workflow one")
    shell.run_line_magic("scanflow", "workflow two")
    with pytest.raises(UsageError, match="this app has several workflows: give one of one, two"):
        shell.run_line_magic("scanflow", "graph")
    with pytest.raises(UsageError, match="cannot save a graph as 'g.jpg'"):
        shell.run_line_magic("scanflow", "graph one --save g.jpg")
    assert not (tmp_path / "g.jpg").exists()


def test_graph_of_an_empty_workflow_explains(shell, capsys):
    shell.run_line_magic("scanflow", "workflow empty")
    widget = shell.run_line_magic("scanflow", "graph empty")
    assert "has no executors yet: add one with %%scanflow executor NAME --workflow empty" in widget.message
    capsys.readouterr()
    shell.run_line_magic("scanflow", "graph empty --text")
    assert capsys.readouterr().out.splitlines()[:2] == ["empty  (sequential)", "└── (no executors yet)"]


def test_without_dot_the_magic_explains_and_falls_back_to_text(shell, tmp_path, monkeypatch, capsys):
    declare(shell)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    widget = shell.run_line_magic("scanflow", "graph pipeline")
    assert "graphviz&#x27;s `dot` program is not installed" in widget.message
    assert "├── prepare  [pending]" in widget.text
    with pytest.raises(
        UsageError,
        match=r"cannot draw .*pipeline.png: graphviz's `dot` program is not installed; "
        r"install graphviz \(Debian/Ubuntu: apt-get install graphviz",
    ):
        shell.run_line_magic("scanflow", "graph pipeline --save pipeline.png")
    assert not (tmp_path / "pipeline.png").exists()
    capsys.readouterr()
    shell.run_line_magic("scanflow", "graph pipeline --save pipeline.gv --text")
    assert (tmp_path / "pipeline.gv").read_text().startswith("digraph pipeline {")
