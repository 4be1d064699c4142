"""The three-way merge of scanflow.yaml entries (pure): what is taken, what conflicts, in what order."""

import pytest

from scanflow_nb import Executor, Workflow
from scanflow_nb.appfile import entries, merge, workflows
from scanflow_nb.errors import ConflictError, ValidationError


def app(*executors, parallel=False, extra=()):
    return [Workflow("w", parallel=parallel, executors=[Executor(n, code=f"print('{n}')") for n in executors]), *extra]


def test_each_side_keeps_its_own_changes():
    base = entries(app("a"))
    ours = entries(app("a", "b"))  # added here
    theirs = entries(app("a", parallel=True, extra=[Workflow("other")]))  # changed and added on disk
    result, taken = merge(base, ours, theirs)
    merged = workflows(result)
    assert [wf.name for wf in merged] == ["w", "other"]
    assert merged[0].parallel and [ex.name for ex in merged[0].executors] == ["a", "b"]
    assert taken == [("workflow", "w"), ("workflow", "other")]


def test_removals_on_either_side_are_kept():
    base = entries(app("a", "b", "c"))
    result, _ = merge(base, entries(app("a", "c")), entries(app("a", "b")))
    assert [ex.name for ex in workflows(result)[0].executors] == ["a"]


def test_an_entry_changed_differently_on_both_sides_is_a_conflict_unless_a_declaration_decides():
    base = entries(app("a"))
    ours, theirs = entries(app("a", parallel=True)), entries(app("a"))
    theirs[("workflow", "w")] = {**theirs[("workflow", "w")], "tracker": {"port": 5001}}
    with pytest.raises(ConflictError, match="workflow 'w' changed both there and here"):
        merge(base, ours, theirs)
    result, _ = merge(base, ours, theirs, decided=[("workflow", "w")])
    assert workflows(result)[0].parallel and workflows(result)[0].tracker is None


def test_new_entries_keep_their_place_after_the_one_they_follow_here():
    base = entries(app("a", "c"))
    ours = entries(app("a", "b", "c"))
    theirs = entries(app("a", "c", "d"))
    result, _ = merge(base, ours, theirs)
    assert [ex.name for ex in workflows(result)[0].executors] == ["a", "b", "c", "d"]


def test_entries_that_no_longer_fit_together_are_refused():
    base = entries([Workflow("w", executors=[Executor("a", code="1")])])
    ours = entries([Workflow("w", executors=[Executor("a", code="1"), Executor("b", code="2", depends_on=["a"])])])
    theirs = entries([Workflow("w")])  # a removed on disk while b, here, came to depend on it
    result, _ = merge(base, ours, theirs)
    with pytest.raises(ValidationError, match="depends on unknown 'a'"):
        workflows(result)
