"""Which model version serves: register candidates, promote one only when a held-out metric says it is better.

Everything goes through MlflowClient with explicit ids (no fluent state), so a background thread can decide.
Aliases carry the state: `champion` serves, `challenger` is the latest candidate. Each promotion tags the new
champion with the version it replaced, which is what `rollback` follows. Every decision is an MLflow run.
"""

import tempfile
from dataclasses import dataclass

from ..errors import TrackerError, ValidationError
from ..track import experiment_id, get_client, log_values

REPLACED = "scanflow.replaced"


def _requirements() -> list[str]:
    """The model's pip requirements, pinned to what runs here (saves MLflow's slow inference of them)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("scikit-learn", "cloudpickle", "numpy")]


@dataclass(frozen=True)
class Decision:
    """One planner decision: `action` is promote, keep or rollback; `champion` serves afterwards."""

    action: str
    version: int
    champion: int
    previous: int | None
    score: float | None
    champion_score: float | None
    reason: str
    run_id: str

    @property
    def promoted(self) -> bool:
        return self.action == "promote"


class ModelPlanner:
    """Registers models under `model_name` and decides which version is the champion.

    metric: a scikit-learn scorer name ("accuracy", "f1_macro", "neg_log_loss"...: higher is better), or a
    callable `metric(model, X, y) -> float` with `greater_is_better` saying which way is better.
    A challenger replaces the champion only if it beats it by more than `min_improvement`.
    """

    def __init__(
        self,
        tracking_uri: str,
        model_name: str,
        metric="accuracy",
        greater_is_better: bool = True,
        alias: str = "champion",
        challenger_alias: str = "challenger",
        min_improvement: float = 0.0,
        experiment: str = "planner",
    ):
        if not model_name or not isinstance(model_name, str):
            raise ValidationError(f"the planner needs a registered model name, got {model_name!r}")
        if alias == challenger_alias:
            raise ValidationError(f"the champion and challenger aliases must differ, both are {alias!r}")
        self.tracking_uri, self.model_name, self.experiment = tracking_uri, model_name, experiment
        self.alias, self.challenger_alias = alias, challenger_alias
        self.min_improvement = float(min_improvement)
        self.greater_is_better = greater_is_better
        self.metric_name = metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")
        self._metric = self._scorer(metric)
        self._models: dict[int, object] = {}

    @classmethod
    def for_workflow(cls, app, workflow: str, model_name: str | None = None, **options) -> "ModelPlanner":
        """The planner of `workflow`: its Planner spec (see `Workflow.special`; defaults if none), on the
        workflow's tracking URI and experiment. `model_name` and `options` override the spec."""
        from ..spec import Planner

        spec = app.special(workflow, "planner") or Planner()
        settings = {
            "metric": spec.metric,
            "alias": spec.alias,
            "greater_is_better": spec.greater_is_better,
            "experiment": app.experiment_name(workflow),
            **options,
        }
        return cls(app.tracking_uri(workflow), model_name or spec.model or workflow, **settings)

    @staticmethod
    def _scorer(metric):
        if callable(metric):
            return metric
        from sklearn.metrics import get_scorer, get_scorer_names

        if metric not in get_scorer_names():
            raise ValidationError(
                f"unknown metric {metric!r}: use a scikit-learn scorer name such as accuracy, "
                "f1_macro or neg_log_loss, or a function (model, X, y) -> float"
            )
        return get_scorer(metric)

    @property
    def client(self):
        return get_client(self.tracking_uri)

    # ---- registering
    def register(
        self, model, description: str = "", parent_run_id: str | None = None, metrics: dict | None = None
    ) -> int:
        """Log `model` in its own run, register it as a new version, point the challenger alias at it."""
        import mlflow.sklearn
        from mlflow.exceptions import MlflowException

        client = self.client
        run_id = self._start_run("register", {"scanflow.kind": "model"}, parent_run_id)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                mlflow.sklearn.save_model(
                    model, f"{tmp}/model", serialization_format="cloudpickle", pip_requirements=_requirements()
                )
                client.log_artifacts(run_id, f"{tmp}/model", "model")
            for name, value in (metrics or {}).items():
                client.log_metric(run_id, name, float(value))
            try:
                client.create_registered_model(self.model_name)
            except MlflowException as exc:
                if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                    raise
            source = f"{client.get_run(run_id).info.artifact_uri}/model"
            version = int(
                client.create_model_version(self.model_name, source, run_id=run_id, description=description).version
            )
            client.set_registered_model_alias(self.model_name, self.challenger_alias, str(version))
            client.set_tag(run_id, "scanflow.model_version", str(version))
        except MlflowException as exc:
            client.set_terminated(run_id, "FAILED")
            raise TrackerError(f"cannot register model {self.model_name!r}: {exc.message}") from None
        client.set_terminated(run_id, "FINISHED")
        self._models[version] = model
        return version

    # ---- deciding
    def champion(self) -> int | None:
        """The version the champion alias points at, or None before the first promotion."""
        return self._alias_version(self.alias)

    def challenger(self) -> int | None:
        """The latest registered candidate not (yet) promoted, or None."""
        return self._alias_version(self.challenger_alias)

    def load(self, version: int | None = None):
        """The model of a version (default: the champion)."""
        version = self.champion() if version is None else int(version)
        if version is None:
            raise ValidationError(f"model {self.model_name!r} has no {self.alias} yet")
        if version not in self._models:
            import mlflow.artifacts
            import mlflow.sklearn

            uri = self.client.get_model_version_download_uri(self.model_name, str(version))
            with tempfile.TemporaryDirectory() as tmp:
                path = mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, tracking_uri=self.tracking_uri, dst_path=tmp
                )
                self._models[version] = mlflow.sklearn.load_model(path)
        return self._models[version]

    def evaluate(self, version: int, X, y) -> float:
        return float(self._metric(self.load(version), X, y))

    def decide(self, version: int, X_holdout, y_holdout, parent_run_id: str | None = None) -> Decision:
        """Score `version` and the champion on the held-out set; promote `version` only if it is better."""
        version = int(version)
        self._check_version(version)
        current = self.champion()
        score = self.evaluate(version, X_holdout, y_holdout)
        if current is None:
            best, action = None, "promote"
            reason = f"no {self.alias} yet: v{version} ({self.metric_name} {score:.4f}) becomes {self.alias}"
        elif current == version:
            best, action = score, "keep"
            reason = f"v{version} already is the {self.alias}"
        else:
            best = self.evaluate(current, X_holdout, y_holdout)
            gain = (score - best) if self.greater_is_better else (best - score)
            action = "promote" if gain > self.min_improvement else "keep"
            verdict = "better" if action == "promote" else "not better"
            reason = (
                f"v{version} {self.metric_name} {score:.4f} vs {self.alias} v{current} {best:.4f}: "
                f"{verdict} (needs more than {self.min_improvement:+.4f})"
            )
        if action == "promote":
            self._move_champion(version, current)
        return self._log(
            action, version, version if action == "promote" else current, current, score, best, reason, parent_run_id
        )

    def rollback(self, reason: str = "rolled back by hand", parent_run_id: str | None = None) -> Decision:
        """Point the champion alias back at the version the current champion replaced."""
        current = self.champion()
        if current is None:
            raise ValidationError(f"model {self.model_name!r} has no {self.alias}: nothing to roll back")
        tags = self.client.get_model_version(self.model_name, str(current)).tags
        if REPLACED not in tags:
            raise ValidationError(
                f"{self.alias} v{current} of {self.model_name!r} replaced no earlier version: nothing to roll back to"
            )
        previous = int(tags[REPLACED])
        self.client.set_registered_model_alias(self.model_name, self.alias, str(previous))
        self.client.set_model_version_tag(self.model_name, str(current), "scanflow.rolled_back", "true")
        return self._log(
            "rollback", current, previous, current, None, None, f"v{current} -> v{previous}: {reason}", parent_run_id
        )

    def decisions(self) -> list[dict]:
        """Every decision logged for this model, oldest first: action, version, champion, reason, scores."""
        client = self.client
        found = client.get_experiment_by_name(self.experiment)
        if found is None:
            return []
        runs = client.search_runs(
            [found.experiment_id],
            f"tags.`scanflow.kind` = 'decision' and tags.`scanflow.model` = '{self.model_name}'",
            order_by=["attributes.start_time ASC"],
            max_results=1000,
        )
        return [
            {
                "action": r.data.tags["scanflow.decision"],
                "version": int(r.data.params["version"]),
                "champion": int(r.data.params["champion"]),
                "reason": r.data.tags["scanflow.reason"],
                **r.data.metrics,
                "run_id": r.info.run_id,
            }
            for r in runs
        ]

    # ---- helpers
    def _move_champion(self, version: int, current: int | None) -> None:
        client = self.client
        if current is not None:
            client.set_model_version_tag(self.model_name, str(version), REPLACED, str(current))
        client.set_registered_model_alias(self.model_name, self.alias, str(version))
        if self._alias_version(self.challenger_alias) == version:
            client.delete_registered_model_alias(self.model_name, self.challenger_alias)

    def _log(self, action, version, champion, previous, score, best, reason, parent_run_id) -> Decision:
        client = self.client
        run_id = self._start_run(f"{action} v{version}", {"scanflow.kind": "decision"}, parent_run_id)
        metrics = {"score": score, "champion_score": best, "promoted": float(champion != previous)}
        params = {
            "version": version,
            "champion": champion,
            "previous": previous,
            "metric": self.metric_name,
            "min_improvement": self.min_improvement,
        }
        log_values(
            client,
            run_id,
            params,
            metrics,
            {"scanflow.decision": action, "scanflow.reason": reason, "mlflow.note.content": reason},
        )
        client.set_terminated(run_id, "FINISHED")
        client.set_model_version_tag(self.model_name, str(version), "scanflow.decision", action)
        client.set_model_version_tag(self.model_name, str(version), "scanflow.reason", reason)
        return Decision(action, version, champion, previous, score, best, reason, run_id)

    def _start_run(self, name: str, tags: dict, parent_run_id: str | None) -> str:
        tags = {**tags, "scanflow.model": self.model_name}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        client = self.client
        return client.create_run(
            experiment_id(client, self.experiment), run_name=f"planner: {name}", tags=tags
        ).info.run_id

    def _alias_version(self, alias: str) -> int | None:
        from mlflow.exceptions import MlflowException

        try:
            return int(self.client.get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException:
            return None

    def _check_version(self, version: int) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_model_version(self.model_name, str(version))
        except MlflowException:
            raise ValidationError(f"model {self.model_name!r} has no version {version}") from None
