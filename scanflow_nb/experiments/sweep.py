"""Sweeps: one executor run once per trial with other parameters, as a generated parallel workflow.

The engine runs the trials as it runs any parallel workflow: up to `max_workers` at once on the
chosen back end, one MLflow parent run (the generated workflow's) with a child run per trial,
retries and timeouts as declared, and Ctrl-C stopping every trial. A grid fixes the trials'
parameters up front; a search asks Optuna for each trial's parameters when the engine starts it
(the engine's `configure` hook) and tells Optuna the trial's metric when it ends, so later trials
learn from earlier ones (Optuna's ask-and-tell). The Optuna study lives in the app's state folder:
the same sweep called again resumes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import html
import itertools
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import events as ev
from ..containers.names import shorten
from ..errors import RunError, ScanflowError, ValidationError
from ..resources import USAGE_METRICS
from ..run.engine import Run
from ..schedule import Task, task_key
from ..spec import Executor, Workflow
from ..track.history import SWEEP
from ..track.recorded import BOOKKEEPING_METRICS
from ..track.store import get_client, log_values

try:
    import fcntl
except ImportError:  # no advisory locks (Windows): sweeps of one executor are not kept apart
    fcntl = None

DIRECTIONS = ("minimize", "maximize")
SEARCHES = ("grid", "optuna", "random")
# the engine's, not the trial's: its usage metrics are written after a trial's end event, so only some would show
NOT_TRIAL_METRICS = (*BOOKKEEPING_METRICS, *USAGE_METRICS)


@dataclass
class Trial:
    """One trial: its parameters and, once it ended, its state, metric and MLflow run."""

    number: int
    params: dict[str, Any]
    status: str = ev.PENDING
    metric: float | None = None
    run_id: str | None = None
    duration: float | None = None
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class SweepResult:
    """What a sweep found: `.best` (a Trial: params, metric, run_id) and `.trials` (a DataFrame)."""

    def __init__(self, executor: str, search: str, metric: str | None, direction: str, trials: list[Trial]):
        self.executor, self.search, self.metric, self.direction = executor, search, metric, direction
        self.trial_list = trials
        self.run_id: str | None = None  # the parent MLflow run of this call's trials
        self.study: str | None = None  # the Optuna study, for searches
        self.status = ev.SUCCEEDED

    @property
    def best(self) -> Trial:
        """The succeeded trial with the best metric."""
        if self.metric is None:
            raise ScanflowError("the trials logged several metrics or none: give metric='...' to pick the best")
        scored = [t for t in self.trial_list if t.status == ev.SUCCEEDED and _finite(t.metric)]
        if not scored:
            raise ScanflowError(f"no trial succeeded with a value of metric {self.metric!r}")
        pick = max if self.direction == "maximize" else min
        return pick(scored, key=lambda t: t.metric)

    @property
    def trials(self):
        """A pandas DataFrame: one row per trial with its state, parameters, metrics, duration and run id."""
        import pandas as pd

        rows = [
            {
                "trial": t.number,
                "status": t.status,
                **t.params,
                **t.metrics,
                **({self.metric: t.metric} if self.metric else {}),
                "duration": t.duration,
                "run_id": t.run_id,
                "error": t.error,
            }
            for t in sorted(self.trial_list, key=lambda t: t.number)
        ]
        return pd.DataFrame(rows, columns=None if rows else ["trial", "status", "duration", "run_id", "error"])

    def best_or_none(self) -> Trial | None:
        """`.best`, or None while no trial has a metric."""
        try:
            return self.best
        except ScanflowError:
            return None

    def summary(self) -> str:
        done = sum(t.status == ev.SUCCEEDED for t in self.trial_list)
        head = f"sweep of {self.executor} ({self.search}): {done} of {len(self.trial_list)} trials succeeded"
        if self.status != ev.SUCCEEDED:
            head += f"; {self.status}"
        best = self.best_or_none()
        if best is not None:
            head += f"; best {self.metric}={best.metric:.6g} with {_params(best.params)} (run {best.run_id})"
        if self.run_id:
            head += f"; MLflow parent run {self.run_id}"
        return head

    def __str__(self) -> str:
        return self.summary() + "\n" + self.trials.drop(columns=["error"]).to_string(index=False)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        return f"<b>{html.escape(self.summary())}</b>" + trials_html(self.trial_list, self.metric, self.best_or_none())


def trials_html(trials: list[Trial], metric: str | None, best: Trial | None) -> str:
    """A compact table of trials, the best one in bold."""
    names = list(dict.fromkeys(k for t in trials for k in t.params))
    colour = {ev.SUCCEEDED: "#2e7d32", ev.FAILED: "#c62828", ev.RUNNING: "#ef6c00"}
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["trial", "state", *names, metric or "metric", "took", "run"])
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        style = " style='font-weight:bold'" if best is not None and t.number == best.number else ""
        cells = [
            str(t.number),
            f"<span style='color:{colour.get(t.status, 'inherit')}'>{html.escape(t.status)}</span>",
            *(html.escape(str(t.params.get(n, ""))) for n in names),
            "" if t.metric is None else f"{t.metric:.6g}",
            "" if t.duration is None else f"{t.duration:.1f} s",
            f"<code>{(t.run_id or '')[:8]}</code>",
        ]
        rows.append(f"<tr{style}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table style='font-size:0.85em'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


# -- what to try ----------------------------------------------------------------------------------
def grid_points(grid: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first parameter varying slowest."""
    if not grid:
        raise ValidationError("the grid is empty: give each parameter a list of values, e.g. grid={'trees': [10, 50]}")
    values = []
    for name, choices in grid.items():
        choices = list(choices) if isinstance(choices, (list, tuple, range)) else [choices]
        if not choices:
            raise ValidationError(f"grid: parameter {name!r} has no values")
        for value in choices:
            _check_value(name, value)
        values.append(choices)
    return [dict(zip(grid, combo)) for combo in itertools.product(*values)]


def _check_value(name: str, value: Any) -> None:
    if not isinstance(value, (str, int, float, bool)):
        raise ValidationError(f"parameter {name!r}: {value!r} is not a string, number or boolean")


def distributions(space: dict[str, Any]) -> dict[str, Any]:
    """Optuna distributions from a space: (low, high) ints or floats, (low, high, "log"), a list of choices,
    or an Optuna distribution as is."""
    import optuna.distributions as od

    if not space:
        raise ValidationError("the search space is empty: e.g. space={'lr': (1e-4, 1e-1, 'log'), 'trees': (10, 200)}")
    out = {}
    for name, spec in space.items():
        if isinstance(spec, od.BaseDistribution):
            out[name] = spec
        elif isinstance(spec, list) and spec:
            for value in spec:
                _check_value(name, value)
            out[name] = od.CategoricalDistribution(spec)
        elif isinstance(spec, tuple) and len(spec) in (2, 3) and all(_number(v) for v in spec[:2]):
            low, high = spec[:2]
            log = len(spec) == 3 and spec[2] == "log"
            if len(spec) == 3 and not log:
                raise ValidationError(f"space {name!r}: the third item can only be 'log', got {spec[2]!r}")
            if not low < high or (log and low <= 0):
                raise ValidationError(f"space {name!r}: need low < high (and low > 0 on a log scale), got {spec}")
            ints = isinstance(low, int) and isinstance(high, int)
            out[name] = od.IntDistribution(low, high, log=log) if ints else od.FloatDistribution(low, high, log=log)
        else:
            raise ValidationError(
                f"space {name!r}: give (low, high), (low, high, 'log'), a list of choices or an Optuna "
                f"distribution, got {spec!r}"
            )
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


class GridPlan:
    """Trials with fixed parameters, in grid order."""

    kind = "grid"

    def __init__(self, points: list[dict[str, Any]]):
        self.points, self._next = points, 0
        self.names = set(points[0]) if points else set()
        self.earlier: list[Trial] = []
        self.remaining = self.total = len(points)
        self.study: str | None = None

    def open(self) -> None:
        pass

    def ask(self) -> Trial:
        trial = Trial(self._next, dict(self.points[self._next]))
        self._next += 1
        return trial

    def tell(self, trial: Trial) -> None:
        pass

    def abandon(self) -> None:
        pass


class OptunaPlan:
    """Trials whose parameters an Optuna study picks as each one starts; the study is kept in the state folder."""

    def __init__(
        self,
        state_dir: Path,
        key: str,
        space: dict[str, Any],
        trials: int,
        metric: str,
        direction: str,
        name: str | None,
        kind: str,
        seed: int | None,
    ):
        self.kind, self.metric, self.direction, self.seed, self.total = kind, metric, direction, seed, trials
        self.optuna = _optuna()
        self.space = distributions(space)
        self.names = set(self.space)
        described = json.dumps(
            [kind, metric, direction, {k: repr(v) for k, v in sorted(self.space.items())}], sort_keys=True
        )
        self.study = name or f"{key}-{hashlib.sha256(described.encode()).hexdigest()[:8]}"
        self.journal = Path(state_dir) / "optuna.journal"
        self.earlier: list[Trial] = []
        self.remaining = trials
        self._asked: dict[int, Any] = {}

    def open(self) -> None:
        optuna = self.optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
        from optuna.trial import TrialState

        self.journal.parent.mkdir(parents=True, exist_ok=True)
        if self.kind == "random":
            sampler = optuna.samplers.RandomSampler(seed=self.seed)
        else:  # few trials: fewer random ones before the model takes over
            sampler = optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=max(2, min(10, self.total // 4)))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._study = optuna.create_study(
            storage=JournalStorage(JournalFileBackend(str(self.journal))),
            study_name=self.study,
            direction=self.direction,
            sampler=sampler,
            load_if_exists=True,
        )
        for stale in self._study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            self._study.tell(stale.number, state=TrialState.FAIL)  # a sweep that was killed (the lock says so)
        done = [t for t in self._study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        self.earlier = [
            Trial(
                t.number,
                dict(t.params),
                ev.SUCCEEDED,
                t.value,
                t.user_attrs.get("run_id"),
                t.duration.total_seconds() if t.duration else None,
                metrics={self.metric: t.value},
            )
            for t in done
        ]
        self.remaining = max(0, self.total - len(done))

    def ask(self) -> Trial:
        asked = self._study.ask(self.space)
        self._asked[asked.number] = asked
        return Trial(asked.number, dict(asked.params))

    def tell(self, trial: Trial) -> None:
        from optuna.trial import TrialState

        asked = self._asked.pop(trial.number, None)
        if asked is None:
            return
        if trial.run_id:
            asked.set_user_attr("run_id", trial.run_id)
        if trial.status == ev.SUCCEEDED and _finite(trial.metric):
            self._study.tell(asked, trial.metric)
        else:
            self._study.tell(asked, state=TrialState.FAIL)

    def abandon(self) -> None:
        """Mark every trial asked for and not told as failed (the sweep stopped)."""
        from optuna.trial import TrialState

        for asked in list(self._asked.values()):
            self._study.tell(asked, state=TrialState.FAIL)
        self._asked.clear()


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ScanflowError("searches need Optuna: pip install 'scanflow_nb[optuna]' (a grid needs nothing)") from None
    return optuna


# -- running -------------------------------------------------------------------------------------
class TrialRunner:
    """The engine's view of the trials: parameters when a trial starts, its metric when it ends."""

    def __init__(self, plan, base: Executor, key: str, uri: str, metric: str | None, direction: str, on_trial, echo):
        self.plan, self.base, self.key, self.uri, self.metric = plan, base, key, uri, metric
        self.better = max if direction == "maximize" else min
        self.on_trial: Callable[[Trial], None] | None = on_trial
        self.echo = echo
        self.trials: dict[str, Trial] = {}
        self.parent_run: str | None = None
        self._best: float | None = None

    def configure(self, task: Task) -> Executor:
        trial = self.plan.ask()
        trial.status = ev.RUNNING
        self.trials[task.key] = trial
        return dataclasses.replace(task.executor, parameters={**self.base.parameters, **trial.params})

    def __call__(self, event: ev.RunEvent) -> None:
        if event.kind == ev.RUN_FINISHED:  # stopped or not, the parent run is known by now
            self.parent_run = event.run_id
        if event.kind == ev.RUN_STARTED:
            if self.echo:
                print(
                    f"sweep of {self.key}: {self.plan.remaining} trial(s), {self.plan.kind}"
                    + (f" (study {self.plan.study!r})" if self.plan.study else "")
                )
            return
        trial = self.trials.get(event.key or "")
        if trial is None or event.kind not in ev.FINAL_STATES:
            return
        trial.status, trial.run_id, trial.duration, trial.error = event.kind, event.run_id, event.duration, event.error
        if event.kind == ev.SUCCEEDED and event.run_id:
            try:
                logged = get_client(self.uri).get_run(event.run_id).data.metrics
            except Exception as exc:  # the trial counts as failed; the sweep goes on
                logged, trial.error = {}, f"its metrics could not be read: {exc}"
            trial.metrics = {k: v for k, v in logged.items() if k not in NOT_TRIAL_METRICS}
            trial.metric = trial.metrics.get(self.metric) if self.metric else None
            if self.metric and trial.metric is None and not trial.error:
                trial.error = f"it logged no metric {self.metric!r}"
        self.plan.tell(trial)
        if self.echo:
            print(self._line(trial))
        if self.on_trial is not None:
            try:
                self.on_trial(trial)
            except Exception as exc:  # a broken display must not stop the search from hearing about trials
                print(f"[scanflow] on_trial failed and is no longer called: {type(exc).__name__}: {exc}")
                self.on_trial = None

    def _line(self, trial: Trial) -> str:
        done = sum(t.status in ev.FINAL_STATES for t in self.trials.values())
        text = f"trial {trial.number} ({done}/{self.plan.remaining}) {trial.status}"
        if trial.duration is not None:
            text += f" in {trial.duration:.1f} s"
        text += f": {_params(trial.params)}"
        if _finite(trial.metric):
            text += f" -> {self.metric}={trial.metric:.6g}"
            if self._best is None or self.better(self._best, trial.metric) == trial.metric:
                self._best = trial.metric
                text += " (best so far)"
        if trial.error:
            text += f" [{trial.error}]"
        return text


def sweep(
    app: Any,
    executor: str,
    grid: dict[str, Any] | None = None,
    *,
    search: str | None = None,
    space: dict[str, Any] | None = None,
    trials: int | None = None,
    metric: str | None = None,
    direction: str = "minimize",
    backend: Any = "local",
    max_workers: int | None = None,
    name: str | None = None,
    seed: int | None = None,
    backend_options: dict | None = None,
    on_trial: Callable[[Trial], None] | None = None,
    echo: bool = True,
) -> SweepResult:
    """See `App.sweep`."""
    wf, ex = app.find_executor(executor)
    key = task_key(wf.name, ex.name)
    plan = _plan(app, key, grid, search, space, trials, metric, direction, name, seed)
    unknown = sorted(plan.names - set(ex.parameters))
    if unknown:
        raise ValidationError(
            f"executor {key} has no parameter {', '.join(map(repr, unknown))} "
            f"(declared: {', '.join(ex.parameters) or 'none'}); declare it with a default first (--param K=V)"
        )
    with _sweep_lock(app.state_dir, key):
        plan.open()
        result = SweepResult(key, plan.kind, metric, direction, list(plan.earlier))
        result.study = plan.study
        if plan.remaining == 0:
            if echo:
                print(
                    f"study {plan.study!r} has {len(plan.earlier)} finished trial(s) of {plan.total}: nothing to "
                    "run (more trials=, or another name=, go on)"
                )
            return result
        if echo and ex.outputs:
            print(f"note: the trials all write {', '.join(ex.outputs)}; the last trial to end leaves its version")
        runner = TrialRunner(plan, ex, key, app.store_uri, metric, direction, on_trial, echo)
        generated = _trials_workflow(app, wf, ex, plan.remaining)
        top = app.twin([_with_child(app.root_of(wf.name), wf.name, generated)])
        tags = {SWEEP: key, "scanflow.sweep.search": plan.kind, "scanflow.sweep.direction": direction}
        if metric:
            tags["scanflow.sweep.metric"] = metric
        if plan.study:
            tags["scanflow.sweep.study"] = plan.study
        run = Run(
            top,
            generated.name,
            backend,
            force=True,
            max_workers=max_workers,
            listeners=[runner],
            echo=False,
            backend_options=backend_options,
            tags=tags,
            configure=runner.configure,
        )
        try:
            outcome = run.execute()
        except BaseException:
            plan.abandon()
            result.trial_list += list(runner.trials.values())
            result.status, result.run_id = "interrupted", runner.parent_run
            if echo:
                done = sum(t.status in ev.FINAL_STATES for t in runner.trials.values())
                again = "; the same call resumes the study" if plan.study else ""
                parent = f" (MLflow parent run {runner.parent_run})" if runner.parent_run else ""
                print(
                    f"sweep stopped after {done} of {plan.remaining} trial(s){parent}; no trial is left running{again}"
                )
            raise
        result.trial_list += list(runner.trials.values())
        result.run_id, result.status = outcome.run_id, outcome.status
    if result.metric is None:
        result.metric = _only_metric(result.trial_list)
        for t in result.trial_list:
            t.metric = t.metrics.get(result.metric) if result.metric else None
    _record_best(app.store_uri, result)
    if echo:
        print(result.summary())
    return result


def _plan(app, key, grid, search, space, trials, metric, direction, name, seed):
    if direction not in DIRECTIONS:
        raise ValidationError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
    search = search or ("grid" if grid is not None else "optuna")
    if search not in SEARCHES:
        raise ValidationError(f"unknown search {search!r}: choose one of {', '.join(SEARCHES)}")
    if search == "grid":
        if grid is None or space is not None or trials is not None:
            raise ValidationError("a grid sweep takes grid={...} only; space= and trials= go with search='optuna'")
        return GridPlan(grid_points(grid))
    if grid is not None or space is None:
        raise ValidationError(f"search={search!r} takes space={{...}}, not grid=")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValidationError(f"search={search!r} needs trials=N (N >= 1), got {trials!r}")
    if not metric:
        raise ValidationError(f"search={search!r} needs the metric it optimizes: metric='...' (logged by the executor)")
    return OptunaPlan(app.state_dir, key, space, trials, metric, direction, name, search, seed)


def _trials_workflow(app: Any, wf: Workflow, ex: Executor, count: int) -> Workflow:
    """A parallel workflow of `count` copies of `ex`: the trials, parameters filled in as each starts."""
    taken = {w.name for w in app.all_workflows()}
    base = shorten(f"sweep-{wf.name}-{ex.name}")
    name = next(n for n in (base, *(shorten(f"{base}-{i}") for i in range(2, 1000))) if n not in taken)
    width = max(3, len(str(count - 1)))
    trials = [dataclasses.replace(ex, name=f"trial-{i:0{width}d}", depends_on=[], outputs=[]) for i in range(count)]
    return Workflow(name, executors=trials, parallel=True)


def _with_child(top: Workflow, parent: str, child: Workflow) -> Workflow:
    """A copy of `top` with `child` added under workflow `parent` (its tracker and experiment apply)."""
    import copy

    top = copy.deepcopy(top)
    top.find(parent).add(child)
    return top


def _only_metric(trials: list[Trial]) -> str | None:
    """The one metric every succeeded trial logged, if there is exactly one."""
    names = [set(t.metrics) for t in trials if t.status == ev.SUCCEEDED]
    common = set.intersection(*names) if names else set()
    return next(iter(common)) if len(common) == 1 else None


def _record_best(uri: str, result: SweepResult) -> None:
    """Tag the parent run with the best trial (its run, parameters and metric)."""
    best = result.best_or_none()
    if best is None or result.run_id is None:
        return
    log_values(
        get_client(uri),
        result.run_id,
        metrics={f"best_{result.metric}": best.metric},
        tags={"scanflow.sweep.best_run": best.run_id, "scanflow.sweep.best_params": json.dumps(best.params)},
    )


@contextlib.contextmanager
def _sweep_lock(state_dir: Path, key: str) -> Iterator[None]:
    """One sweep of an executor at a time in an app (their trials would share logs and a study)."""
    if fcntl is None:
        yield
        return
    folder = Path(state_dir) / "sweeps"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"a sweep of {key} is already running in this app: wait for it or stop it") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


# -- from the command line and the magic ----------------------------------------------------------
def parse_grid(items: list[str] | None) -> dict[str, list[Any]] | None:
    """`["trees=10,50", "depth=3,5"]` -> {"trees": [10, 50], "depth": [3, 5]} (values read as YAML scalars)."""
    if not items:
        return None
    return {name: [_scalar(v) for v in values.split(",")] for name, values in map(_split, items)}


def parse_space(items: list[str] | None) -> dict[str, Any] | None:
    """`K=LOW:HIGH` (ints or floats), `K=LOW:HIGH:log`, or `K=A,B,C` (choices) -> a space for `distributions`."""
    if not items:
        return None
    space: dict[str, Any] = {}
    for name, text in map(_split, items):
        if ":" in text:
            parts = text.split(":")
            if len(parts) not in (2, 3):
                raise ValidationError(f"--space {name}: give LOW:HIGH or LOW:HIGH:log, got {text!r}")
            space[name] = (*(_scalar(p) for p in parts[:2]), *parts[2:])
        else:
            space[name] = [_scalar(v) for v in text.split(",")]
    return space


def _split(item: str) -> tuple[str, str]:
    name, sep, values = item.partition("=")
    if not sep or not name or not values:
        raise ValidationError(f"expected NAME=VALUES, got {item!r}")
    return name, values


def _scalar(text: str) -> Any:
    """A number (1e-4 included, which YAML 1.1 reads as a string), a YAML boolean, else the text."""
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (str, bool)) else text
