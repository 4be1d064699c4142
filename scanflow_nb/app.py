"""An app: a folder holding executor files, its workflows (saved as scanflow.yaml) and run state.

`App(path)` opens what is in the folder. Every save is a locked, merged write (`appfile`): a
declaration changes only its own entry, and what another kernel or an editor changed on disk
meanwhile is kept and reloaded, never overwritten.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from . import appfile
from .errors import ConflictError, NotFoundError, RunError, ValidationError
from .events import Listener
from .files import atomic_write
from .resources import Resources
from .run.output import OutputLimits, head_lines, tail_lines
from .run.result import RunResult
from .run.workspace import Workspace
from .schedule import resolve, task_key
from .spec import Executor, Tracker, Workflow, check_name

CONFIG = appfile.CONFIG
LOG_HEAD, LOG_TAIL = 20, 100  # lines of a long log shown by `logs(..., max_bytes=...)`


class App:
    """The app folder and its top-level workflows. Workflow names are unique across the app.

    `App(path)` loads the folder's scanflow.yaml if there is one; `workflows` are then added,
    each replacing one of the same name (a script run again).
    """

    def __init__(self, path: str | Path, workflows: Iterable[Workflow] = ()):
        self.path = Path(path).expanduser().resolve()
        if self.path.exists() and not self.path.is_dir():
            raise ValidationError(f"app path {self.path} is a file, not a folder")
        self.workspace = Workspace(self.path)
        seen = appfile.signature(self.config_file)
        self.workflows: list[Workflow] = appfile.read(self.config_file) or []
        self._base = appfile.entries(self.workflows)  # the file as this app last read or wrote it
        self._seen = seen
        self._detached = False  # a twin (see `twin`) has no file to follow
        self.disk_changes: list[str] = []  # what the last change, save or refresh took from the file on disk
        for wf in workflows:
            self.add(wf)

    def __repr__(self) -> str:
        return f"App({str(self.path)!r}, workflows={[w.name for w in self.workflows]})"

    @property
    def state_dir(self) -> Path:
        return self.workspace.state_dir

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    # -- the app file ------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> App:
        """The app in folder `path`: the same as `App(path)`."""
        return cls(path)

    @classmethod
    def load(cls, file: str | Path) -> App:
        """The app in `file`'s folder, with the workflows of `file` (any YAML file in the app's format) added."""
        file = Path(file).expanduser().resolve()
        if not file.is_file():
            raise NotFoundError(f"no workflow file at {file}")
        app = cls(file.parent)
        if file != app.config_file:
            for wf in appfile.read(file) or []:
                app.add(wf)
        return app

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "workflows": [wf.to_dict() for wf in self.workflows]}

    def save(self, file: str | Path | None = None) -> Path:
        """Write the workflows to scanflow.yaml, merged with what is on disk (see `appfile`).

        Given another `file`, write a plain copy of the workflows there, atomically.
        """
        target = Path(file).expanduser() if file else self.config_file
        if not target.is_absolute():
            target = self.path / target
        if target.resolve() == self.config_file:
            self.disk_changes = []
            self._sync(write=True)
        else:
            appfile.write(target, self.workflows)
        return target

    def refresh(self) -> list[str]:
        """Take what changed in scanflow.yaml on disk since this app last read or wrote it; returns what it took."""
        self.disk_changes = []
        if not self._detached:
            self._sync(write=False)
        return list(self.disk_changes)

    def _sync(self, write: bool, decided: Iterable[appfile.Key] = ()) -> None:
        """Merge memory with the file on disk; with `write`, under the lock, and write the result."""
        with appfile.locked(self.path) if write else nullcontext():
            seen = appfile.signature(self.config_file)
            if seen == self._seen:
                theirs = self._base
            else:
                theirs = appfile.entries(appfile.read(self.config_file) or [])
            ours = appfile.entries(self.workflows)
            result, taken = appfile.merge(self._base, ours, theirs, decided)
            workflows = self.workflows
            if result != ours:
                try:
                    workflows = appfile.workflows(result)
                except ValidationError as exc:
                    raise ConflictError(
                        f"{CONFIG} changed on disk and cannot be merged with this change: {exc}; nothing was written"
                    ) from None
            if write and (result != theirs or seen is None):
                appfile.write(self.config_file, workflows)
                seen = appfile.signature(self.config_file)
            self.workflows, self._seen = workflows, seen
            self._base = result if write else theirs
            self.disk_changes += [appfile.describe(key) for key in taken]

    def _change(self, apply: Callable[[], Any], decided: appfile.Key, save: bool) -> Any:
        """Apply a declaration to memory and save it; on any failure memory is as it was."""
        before = copy.deepcopy(self.workflows)
        try:
            outcome = apply()
            if save:
                self._sync(write=True, decided=[decided])
        except BaseException:
            self.workflows = before
            raise
        return outcome

    # -- looking things up ---------------------------------------------------------------------
    def all_workflows(self) -> list[Workflow]:
        return [wf for top in self.workflows for wf in top.walk()]

    def find(self, name: str) -> Workflow:
        """The workflow called `name`, at any depth."""
        found = next((wf for wf in self.all_workflows() if wf.name == name), None)
        if found is None:
            known = ", ".join(wf.name for wf in self.all_workflows()) or "none declared yet"
            raise NotFoundError(f"unknown workflow {name!r} (known: {known})")
        return found

    def root_of(self, name: str) -> Workflow:
        """The top-level workflow that contains workflow `name`."""
        self.find(name)
        return next(top for top in self.workflows if top.find(name) is not None)

    def parent_of(self, name: str) -> Workflow | None:
        return self.root_of(name).parent_of(name)

    def find_executor(self, ref: str) -> tuple[Workflow, Executor]:
        """An executor by "name" or "workflow/name"."""
        pairs = [(wf, ex) for top in self.workflows for wf, ex in top.all_executors()]
        key = resolve([task_key(wf.name, ex.name) for wf, ex in pairs], ref)
        return next((wf, ex) for wf, ex in pairs if task_key(wf.name, ex.name) == key)

    def special(self, workflow: str, kind: str):
        """The tracker, checker, improver or planner that applies to `workflow` (see `Workflow.special`)."""
        return self.root_of(workflow).special(workflow, kind)

    def resource_defaults(self, workflow: str) -> Resources:
        """The CPUs, memory and GPUs `workflow` gives its executors, inherited ones included."""
        return self.root_of(workflow).resource_defaults(workflow)

    def experiment_name(self, workflow: str) -> str:
        """The MLflow experiment of a workflow's runs: its top-level workflow's name."""
        return self.root_of(workflow).name

    def log_path(self, key: str) -> Path:
        return self.workspace.log_path(key)

    # -- tracking --------------------------------------------------------------------------------
    def tracking(self, workflow: str):
        """Where `workflow`'s runs are tracked, starting its `mlflow server` if it declares one."""
        from .run.backend import Tracking
        from .track import artifact_root, embedded_uri, running_server

        tracker = self.special(workflow, "tracker") or Tracker()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        store = embedded_uri(self.state_dir)
        if tracker.embedded:
            return Tracking(store, store)
        server = running_server(
            store, artifact_root(self.state_dir), tracker.port, tracker.host, self.state_dir / "tracker.log"
        )
        return Tracking(server.uri, server.uri)

    def tracking_uri(self, workflow: str) -> str:
        return self.tracking(workflow).uri

    # -- changing (used by the magics: each change is validated, then saved) ---------------------
    def add(self, workflow: Workflow, parent: str | None = None) -> None:
        """Add a workflow at the top level or under `parent`, replacing one of the same name there.

        A name the new workflow (or one nested in it) shares with a workflow elsewhere in the app is refused.
        """
        siblings = self.workflows if parent is None else self.find(parent).workflows
        old = next((wf for wf in siblings if wf.name == workflow.name), None)
        replaced = {wf.name for wf in old.walk()} if old else set()
        taken = ({wf.name for wf in self.all_workflows()} - replaced) & {wf.name for wf in workflow.walk()}
        if taken:
            raise ValidationError(f"workflow name {sorted(taken)[0]!r} is already used in this app")
        if parent is not None:
            self.find(parent).add(workflow, replace=True)
        elif old is not None:
            self.workflows[self.workflows.index(old)] = workflow
        else:
            self.workflows.append(workflow)

    def remove(self, ref: str, save: bool = True) -> None:
        """Remove workflow `ref` (with everything in it) or executor `ref` ("workflow/name") and save."""
        self.disk_changes = []
        if "/" in ref:
            workflow, name = ref.split("/", 1)
            wf = self.find(workflow)
            if wf.executor(name) is None:
                raise NotFoundError(f"workflow {workflow!r} has no executor {name!r}")
            users = [ex.name for ex in wf.executors if name in ex.depends_on]
            if users:
                raise ValidationError(f"executor {ref} is needed by {', '.join(users)}: remove or change those first")

            def apply() -> None:
                wf.executors = [ex for ex in wf.executors if ex.name != name]

            key: appfile.Key = ("executor", workflow, name)
        else:
            self.find(ref)
            parent = self.parent_of(ref)
            siblings = self.workflows if parent is None else parent.workflows
            if parent is not None and any(ref in ex.depends_on for ex in parent.executors):
                raise ValidationError(f"workflow {ref!r} is a dependency in {parent.name!r}: change that first")

            def apply() -> None:
                siblings[:] = [wf for wf in siblings if wf.name != ref]

            key = ("workflow", ref)
        self._change(apply, key, save)

    def declare_workflow(
        self,
        name: str,
        parallel: bool = False,
        parent: str | None = None,
        tracker: Tracker | None = None,
        save: bool = True,
        cpus: float | str | None = None,
        memory: int | str | None = None,
        gpus: int | None = None,
    ) -> tuple[Workflow, bool]:
        """Create workflow `name`, or update it if it exists at the same place. Returns (workflow, created).

        `cpus`, `memory` and `gpus` are defaults for the executors inside it, at any depth.
        """
        check_name(name, "workflow")
        Resources.parse(cpus, memory, gpus, f"workflow {name!r}")
        self.disk_changes = []
        if save:
            self.refresh()
        if parent is not None:
            self.find(parent)
        existing = next((wf for wf in self.all_workflows() if wf.name == name), None)
        if existing is not None:
            where = self.parent_of(name)
            if (where.name if where else None) != parent:
                now = f"under {where.name!r}" if where else "at the top level"
                raise ValidationError(f"workflow {name!r} already exists {now}")

        def apply() -> tuple[Workflow, bool]:
            wf = self.find(name) if existing is not None else Workflow(name)
            wf.parallel, wf.tracker = parallel, tracker
            wf.cpus, wf.memory, wf.gpus = cpus, memory, gpus
            if existing is None:
                self.add(wf, parent)
            return wf, existing is None

        wf, created = self._change(apply, ("workflow", name), save)
        return self.find(wf.name), created

    def declare_executor(
        self, workflow: str, name: str, source: str | None = None, save: bool = True, **options: Any
    ) -> str:
        """Declare executor `name` in `workflow`, writing `source` as its file <workflow>/<name>.py.

        Re-declaring an executor replaces it (a notebook cell run again). Returns "wrote" or
        "overwrote" for the file. Nothing is written unless the declaration is valid and saved.
        """
        self.disk_changes = []
        if save:
            self.refresh()
        wf = self.find(workflow)
        if source is not None:
            options["file"] = f"{workflow}/{name}.py"
        executor = Executor(name, **options)
        if isinstance(executor.requirements, str) and not (self.path / executor.requirements).is_file():
            raise NotFoundError(f"requirements file {self.path / executor.requirements} does not exist")
        trial = copy.deepcopy(wf)
        trial.add(executor, replace=True)  # validates; raises before anything changes
        outcome = "wrote"
        old_source = None
        target = self.path / options["file"] if source is not None else None
        if target is not None:
            if target.exists():
                outcome, old_source = "overwrote", target.read_bytes()
            atomic_write(target, source)
        try:
            self._change(lambda: self.find(workflow).add(executor, replace=True), ("executor", workflow, name), save)
        except BaseException:
            if target is not None:
                target.unlink() if old_source is None else atomic_write(target, old_source)
            raise
        return outcome

    # -- running and inspecting ------------------------------------------------------------------
    def run(
        self,
        workflow: str,
        backend: Any = "local",
        *,
        force: bool = False,
        only: str | None = None,
        from_: str | None = None,
        max_workers: int | None = None,
        cpus: float | None = None,
        listeners: Iterable[Listener] = (),
        echo: bool = True,
        background: bool = False,
        backend_options: dict | None = None,
        output: OutputLimits | None = None,
        keep_serving: bool = False,
    ):
        """Run `workflow`; returns a RunResult (or a RunHandle when `background=True`).

        `backend`: a registered name ("local", "docker", "swarm") or a back-end instance;
        `backend_options`: the named back end's options, e.g. {"isolated": True} for local;
        `cpus`: the CPUs the executors that declare theirs share (default: all the nodes have).
        `output`: lines shown per executor and second, log size kept (`OutputLimits`).
        Services (executors with `service=True`) stop when the rest of the run is over, or, with
        `keep_serving`, only on `stop(workflow)` (`%scanflow stop`), an interrupt or `cancel()`.
        """
        from .run.engine import Run, RunHandle

        self.refresh()
        run = Run(
            self,
            workflow,
            backend,
            force=force,
            only=only,
            from_=from_,
            max_workers=max_workers,
            cpus=cpus,
            listeners=listeners,
            echo=echo,
            backend_options=backend_options,
            output=output,
            keep_serving=keep_serving,
        )
        return RunHandle(run) if background else run.execute()

    def stop(self, workflow: str, timeout: float = 120.0) -> RunResult:
        """End the run of `workflow` going on in this process: its services stop cleanly (what is still
        running otherwise is cancelled); returns its result once it has ended (within `timeout` s)."""
        from .run.engine import ACTIVE

        name = self.find(workflow).name
        run = ACTIVE.get((str(self.path), name))
        if run is None:
            raise NotFoundError(f"workflow {name!r} has no run in progress in this process")
        run.stop()
        deadline = time.monotonic() + timeout
        while ACTIVE.get((str(self.path), name)) is run and time.monotonic() < deadline:
            time.sleep(0.1)
        if ACTIVE.get((str(self.path), name)) is run:
            raise RunError(f"the run of {name!r} did not end within {timeout:g} s")
        return self.workspace.last_result(name)

    def status(self, workflow: str | None = None) -> dict[str, RunResult | None]:
        """The last run result of `workflow` (or of every top-level workflow)."""
        names = [self.find(workflow).name] if workflow else [wf.name for wf in self.workflows]
        return {name: self.workspace.last_result(name) for name in names}

    def logs(self, executor: str, tail: int | None = None, max_bytes: int | None = None) -> str:
        """The log of the last run of `executor` ("name" or "workflow/name").

        `tail`: only its last lines. `max_bytes`: a larger log gives its first and last lines around a
        note naming the file, read without loading the rest.
        """
        wf, ex = self.find_executor(executor)
        path = self.log_path(task_key(wf.name, ex.name))
        if not path.is_file():
            raise NotFoundError(f"executor {wf.name}/{ex.name} has not run yet: no log at {path}")
        if tail is not None:
            return "\n".join(tail_lines(path, tail)) + "\n"
        size = path.stat().st_size
        if max_bytes is None or size <= max_bytes:
            return path.read_text(errors="replace")
        note = f"[scanflow] ... log of {size / 1e6:,.1f} MB shortened here, full log: {path}"
        return "\n".join([*head_lines(path, LOG_HEAD), note, *tail_lines(path, LOG_TAIL)]) + "\n"

    # -- experiments: history, compare, re-run, sweeps, the MLflow UI ----------------------------
    @property
    def store_uri(self) -> str:
        """The app's MLflow store: every run of the app is there, whichever tracker wrote it."""
        from .track import embedded_uri

        return embedded_uri(self.state_dir)

    def runs(self, workflow: str | None = None, last: int | None = None):
        """Past workflow runs as a pandas DataFrame, newest first, read from the app's MLflow store.

        One row per run: run_id, workflow, start, duration (s), status, backend, how many executors
        succeeded / failed / were cached / skipped, then each executor's parameters and the last
        value of each metric it logged as columns `<executor>.<name>` (`<workflow>/<executor>.<name>`
        where two workflows have an executor of that name). Runs of other kernels, of `scanflow run`
        and from before a restart are all there. `last`: only the newest N.
        """
        from .track.history import history

        frame = history(self.store_uri, workflow, last)
        if workflow is not None and frame.empty:
            self.find(workflow)  # an unknown name is an error; a known one may not have run yet
        return frame

    def compare(self, run_a: str, run_b: str):
        """What differs between two workflow runs, per executor: code, parameters, requirements, input and
        output digests, image, environment, state and metrics. Run ids may be shortened (6+ characters)."""
        from .track.compare import compare

        return compare(self.store_uri, run_a, run_b)

    def rerun(
        self,
        run_id: str,
        backend: Any = None,
        *,
        max_workers: int | None = None,
        listeners: Iterable[Listener] = (),
        echo: bool = True,
    ) -> RunResult:
        """Run a past workflow run again with the code, parameters and requirements recorded for it.

        Today's declarations and files do not matter (environment values, never recorded, come from
        today's declarations). Prints what it re-runs and which inputs changed since (`echo` is about
        executor output, as in `run`); the new run is tagged `scanflow.rerun_of`. An executor's run id
        re-runs that executor alone. `backend`: default the one the run used.
        """
        from .experiments.rerun import rerun

        return rerun(self, run_id, backend, max_workers=max_workers, listeners=listeners, echo=echo)

    def sweep(self, executor: str, grid: dict[str, Any] | None = None, **options: Any):
        """Run executor `executor` ("name" or "workflow/name") once per trial with other parameters.

        `grid={"trees": [10, 50], "depth": [3, 5]}`: every combination. `search="optuna"` (or
        "random") with `space={"lr": (1e-4, 1e-1, "log"), "trees": (10, 200), "kind": ["a", "b"]}`,
        `trials=N` and the `metric` to `direction` ("minimize", the default, or "maximize"): Optuna
        picks each trial's parameters when a worker frees up; its study lives in the app's state folder,
        so the same call again resumes it (`name=` names the study, `seed=` seeds its sampler). Trials
        run in parallel, up to `max_workers`, on `backend` (with `backend_options`), under one parent
        MLflow run. Returns a SweepResult: `.best` (params, metric, run_id), `.trials` (a DataFrame).
        `on_trial(trial)` is called as each trial ends; `echo=False` prints nothing. Ctrl-C stops every
        trial. (All options: `scanflow_nb.experiments.sweep.sweep`.)
        """
        from .experiments.sweep import sweep

        return sweep(self, executor, grid, **options)

    def ui(self, port: int = 0):
        """An MLflow UI (`mlflow server`) on the app's store at 127.0.0.1 (`port` 0: a free one); `.uri` is
        its address. One per store and kernel, reused; it stops when the kernel exits."""
        from .track import artifact_root, running_server

        self.state_dir.mkdir(parents=True, exist_ok=True)
        return running_server(
            self.store_uri, artifact_root(self.state_dir), port, "127.0.0.1", self.state_dir / "ui.log"
        )

    def twin(self, workflows: Iterable[Workflow]) -> App:
        """An in-memory app over the same folder holding `workflows` instead of this app's; never saved.

        Re-runs and sweeps run generated workflows through the engine this way, leaving the app as it is.
        """
        twin = copy.copy(self)
        twin._detached = True
        twin.workflows = []
        for wf in workflows:
            twin.add(wf)
        return twin
