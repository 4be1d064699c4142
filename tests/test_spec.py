"""The pure model: names, validation, order, plain-data round trip, and the run plan."""

import pytest

from scanflow_nb import Executor, ScanflowError, Tracker, Workflow
from scanflow_nb.schedule import plan, select


def ex(name, **kw):
    return Executor(name, code="print(1)", **kw)


@pytest.mark.parametrize("name", ["a/b", "..", "../x", "a b", "-lead", "é", "x" * 64, "a.b"])
def test_unsafe_names_are_rejected_naming_the_culprit(name):
    with pytest.raises(ScanflowError) as err:
        ex(name)
    assert repr(name) in str(err.value)


def test_missing_name_is_rejected():
    with pytest.raises(ScanflowError, match="executor name is missing"):
        ex("")


def test_safe_names_are_accepted():
    assert ex("train_model-2").name == "train_model-2"
    assert Workflow("Main_1").name == "Main_1"


def test_executor_needs_something_to_run():
    with pytest.raises(ScanflowError, match="nothing to run"):
        Executor("a")


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"retries": -1}, "retries"),
        ({"timeout": 0}, "timeout"),
        ({"parameters": {"a b": 1}}, "parameter name"),
        ({"parameters": {"x": [1]}}, "parameter 'x'"),
        ({"file": "/etc/passwd"}, "inside the app folder"),
        ({"inputs": ["../data"]}, "inside the app folder"),
        ({"env": {"1X": "a"}}, "environment variable"),
    ],
)
def test_bad_executor_fields(kw, match):
    with pytest.raises(ScanflowError, match=match):
        ex("a", **kw)


def test_duplicate_unknown_and_cyclic_dependencies():
    with pytest.raises(ScanflowError, match="duplicate name 'a'"):
        Workflow("w", executors=[ex("a"), ex("a")])
    with pytest.raises(ScanflowError, match="duplicate name 'a'"):
        Workflow("w", executors=[ex("a")], workflows=[Workflow("a")])
    with pytest.raises(ScanflowError, match="depends on unknown 'zz'"):
        Workflow("w", executors=[ex("a", depends_on=["zz"])])
    with pytest.raises(ScanflowError, match=r"cycle in workflow 'w': (a -> b -> a|b -> a -> b)"):
        Workflow("w", executors=[ex("a", depends_on=["b"]), ex("b", depends_on=["a"])])
    with pytest.raises(ScanflowError, match="used twice"):
        Workflow("w", workflows=[Workflow("x"), Workflow("y", workflows=[Workflow("x")])])


def test_failed_change_leaves_workflow_unchanged():
    wf = Workflow("w", executors=[ex("a")])
    with pytest.raises(ScanflowError):
        wf.add(ex("b", depends_on=["nope"]))
    with pytest.raises(ScanflowError, match="already has an executor named 'a'"):
        wf.add(ex("a"))
    assert [e.name for e in wf.executors] == ["a"]
    assert wf.add(ex("a", parameters={"k": 1}), replace=True) is True
    assert wf.executors[0].parameters == {"k": 1}


def test_order_keeps_declaration_order_and_moves_only_what_dependencies_require():
    wf = Workflow("w", executors=[ex("c", depends_on=["b"]), ex("a"), ex("b")])
    assert wf.order() == ["a", "b", "c"]
    assert Workflow("w", executors=[ex("z"), ex("y"), ex("x")]).order() == ["z", "y", "x"]


def test_round_trip_through_plain_data():
    wf = Workflow(
        "main",
        tracker=Tracker(port=5001),
        executors=[ex("a", parameters={"n": 3}, retries=2)],
        workflows=[Workflow("par", parallel=True, executors=[ex("x", depends_on=[]), ex("y")])],
    )
    data = wf.to_dict()
    assert data["tracker"] == {"port": 5001}
    assert Workflow.from_dict(data) == wf
    with pytest.raises(ScanflowError, match="unknown field"):
        Workflow.from_dict({"name": "w", "paralel": True})


def test_parameters_become_command_line_arguments():
    assert ex("a", parameters={"lr": 0.1, "deep": True, "name": "x"}).command_args() == [
        "--lr",
        "0.1",
        "--deep",
        "true",
        "--name",
        "x",
    ]


def nested():
    return Workflow(
        "main",
        executors=[ex("a"), ex("b")],
        workflows=[
            Workflow("par", parallel=True, executors=[ex("x"), ex("y"), ex("z", depends_on=["x"])]),
            Workflow("post", executors=[ex("report")]),
        ],
    )


def test_plan_sequential_chain_parallel_group_and_nesting():
    deps = {t.key: t.deps for t in plan(nested())}
    assert list(deps) == ["main/a", "main/b", "par/x", "par/y", "par/z", "post/report"]
    assert deps["main/b"] == {"main/a"}
    assert deps["par/x"] == deps["par/y"] == {"main/b"}  # side by side after b
    assert deps["par/z"] == {"main/b", "par/x"}
    assert deps["post/report"] == {"par/x", "par/y", "par/z"}  # waits for the whole group


def test_select_only_and_from():
    tasks = plan(nested())
    assert select(tasks, only="y") == {"par/y"}
    assert select(tasks, start="x") == {"par/x", "par/z", "post/report"}
    assert select(tasks, start="par/y") == {"par/y", "post/report"}
    with pytest.raises(ScanflowError, match="no executor 'nope'"):
        select(tasks, only="nope")
    with pytest.raises(ScanflowError, match="either --only or --from"):
        select(tasks, only="a", start="b")


def test_empty_workflow_cannot_be_planned():
    with pytest.raises(ScanflowError, match="has no executors"):
        plan(Workflow("empty", workflows=[Workflow("also_empty")]))


def test_special_nodes_validate_their_settings():
    from scanflow_nb import Checker, Improver

    with pytest.raises(ScanflowError, match="unknown strategy 'best'"):
        Improver(strategy="best")
    with pytest.raises(ScanflowError, match="alpha must be between 0 and 1"):
        Checker(alpha=2)
    with pytest.raises(ScanflowError, match="tracker port"):
        Tracker(port=70000)


def test_an_empty_child_workflow_does_not_break_the_sequential_chain():
    wf = Workflow("m", executors=[ex("a")], workflows=[Workflow("empty"), Workflow("w2", executors=[ex("b")])])
    deps = {t.key: t.deps for t in plan(wf)}
    assert deps["w2/b"] == {"m/a"}
    par = Workflow(
        "p", parallel=True, executors=[ex("a"), ex("c", depends_on=["hollow"])], workflows=[Workflow("hollow")]
    )
    assert {t.key: t.deps for t in plan(par)}["p/c"] == set()


def test_the_nearest_declared_special_applies():
    from scanflow_nb.spec import Checker, Improver, Tracker

    leaf = Workflow("leaf", executors=[Executor("a", code="pass")])
    mid = Workflow("mid", checker=Checker(detector="ks"), workflows=[leaf])
    root = Workflow("root", tracker=Tracker(port=5005), checker=Checker(), workflows=[mid])
    assert root.special("leaf", "checker").detector == "ks"  # mid's, nearer than root's
    assert root.special("root", "checker").detector == "auto"
    assert root.special("leaf", "tracker").port == 5005  # only root declares one
    assert root.special("leaf", "improver") is None
    mid.improver = Improver(k=3)
    assert root.special("leaf", "improver").k == 3 and root.special("root", "improver") is None
    with pytest.raises(ScanflowError, match="unknown special 'monitor'"):
        root.special("leaf", "monitor")
