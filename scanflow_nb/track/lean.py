"""A run's per-step writes to an embedded (SQLite) MLflow store, in one transaction each.

Through MlflowClient, one executor's run costs a creation, a `log_batch` and a `set_terminated`, each
an ORM transaction (an eager experiment read, a dataset query, a full run load per status, an
existence check per key): 25-30 ms a step here. `LeanWrites` does the same in two transactions, about
3 ms, with MLflow's own schema objects (`mlflow.store.tracking.dbmodels.models`, as SQLAlchemy Core
statements built once: no unit of work, no relationship loads), its validation helpers and its
engine (the same pooled connections, with the pragmas MLflow's sessions set):

    lean = LeanWrites.open(client)                  # None: not a SQLite store, or an unverified schema
    run_id, artifact_uri = lean.create(experiment_id, name, start_ms, tags)
    lean.write_out(run_id, params, metrics, tags, timestamp_ms, status, end_ms)   # all or nothing

It keeps MLflow's semantics: the mlflow.runName tag and `runs.name`, artifact_uri as MLflow builds
it, the run's user from the mlflow.user tag, lifecycle_stage, a param logged again with another
value refused with MLflow's error, NaN/inf metrics stored as MLflow stores them, latest metrics by
(step, timestamp, value), value length limits. It is used only on a store whose schema revision
(alembic_version) is in `VERIFIED`, the revisions tests/test_lean_writes.py checked against runs
written by MLflow itself; any other store keeps the MlflowClient path.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

log = logging.getLogger(__name__)

# MLflow schema revisions whose runs, written here, read back as MLflow's own (tests/test_lean_writes.py)
VERIFIED = {"dc11669786a5"}  # MLflow 3.17


class LeanWrites:
    """Creations and write-outs of runs in one SQLite store; see the module's doc."""

    def __init__(self, store):
        self._engine = store.engine  # its connections get MLflow's session pragmas (track.store)
        self._sql = _statements()
        self._sanitize = store.sanitize_metric_value  # NaN as 0 with is_nan, +-inf as the largest doubles

    @classmethod
    def open(cls, client) -> LeanWrites | None:
        """The lean writes for `client`'s store, or None where MlflowClient must write (not SQLite, a
        schema revision no test verified, or the store cannot tell)."""
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = getattr(getattr(client, "_tracking_client", None), "store", None)
        if not isinstance(store, SqlAlchemyStore) or store.db_type != "sqlite":
            return None
        try:
            return cls(store) if revision(store) in VERIFIED else None
        except Exception as exc:
            log.debug("no lean MLflow writes for %s: %s", client.tracking_uri, exc)
            return None

    def create(self, experiment_id: str, name: str, start_ms: int, tags: dict[str, str]) -> tuple[str, str]:
        """A RUNNING run and its tags in one transaction; returns (run id, artifact uri)."""
        from mlflow.entities import LifecycleStage, RunStatus, SourceType
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
        from mlflow.utils.uri import append_to_uri_path

        tags = dict(tags)
        if tags.get(MLFLOW_RUN_NAME, name) != name:
            raise MlflowException(
                f"Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different values "
                f"(run_name='{name}', mlflow.runName='{tags[MLFLOW_RUN_NAME]}').",
                INVALID_PARAMETER_VALUE,
            )
        tags[MLFLOW_RUN_NAME] = name
        run_id = uuid.uuid4().hex
        with self._engine.begin() as db:
            found = db.execute(self._sql.experiment, {"experiment": int(experiment_id)}).one_or_none()
            if found is None:
                raise MlflowException(f"No Experiment with id={experiment_id} exists", RESOURCE_DOES_NOT_EXIST)
            stage, location = found
            if stage != LifecycleStage.ACTIVE:
                raise MlflowException(
                    f"The experiment {experiment_id} must be in the 'active' state. Current state is {stage}.",
                    INVALID_PARAMETER_VALUE,
                )
            artifact_uri = append_to_uri_path(location, run_id, SqlAlchemyStore.ARTIFACTS_FOLDER_NAME)
            db.execute(
                self._sql.insert_run,
                {
                    "name": name,
                    "artifact_uri": artifact_uri,
                    "run_uuid": run_id,
                    "experiment_id": int(experiment_id),
                    "source_type": SourceType.to_string(SourceType.UNKNOWN),
                    "source_name": "",
                    "entry_point_name": "",
                    "user_id": tags.get(MLFLOW_USER, "unknown"),
                    "status": RunStatus.to_string(RunStatus.RUNNING),
                    "start_time": start_ms,
                    "end_time": None,
                    "deleted_time": None,
                    "source_version": "",
                    "lifecycle_stage": LifecycleStage.ACTIVE,
                },
            )
            db.execute(self._sql.insert_tags, [{"run_uuid": run_id, "key": k, "value": v} for k, v in tags.items()])
        return run_id, artifact_uri

    def write_out(
        self,
        run_id: str,
        params: dict[str, Any],
        metrics: dict[str, Any],
        tags: dict[str, Any],
        timestamp_ms: int,
        status: str | None = None,
        end_ms: int | None = None,
    ) -> bool:
        """Params, metrics (at `timestamp_ms`, step 0), tags and, if `status`, the run's end, in one
        transaction: all of it is written or none. False (nothing written) if it exceeds one batch."""
        from mlflow.entities import LifecycleStage, Metric, Param, RunStatus, RunTag
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
        from mlflow.utils.validation import _validate_batch_log_data, _validate_batch_log_limits

        metric_list = [Metric(k, float(v), timestamp_ms, 0) for k, v in metrics.items() if v is not None]
        param_list = [Param(k, str(v)) for k, v in params.items() if v is not None]
        tag_list = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        try:
            _validate_batch_log_limits(metric_list, param_list, tag_list)
        except MlflowException:
            return False  # MlflowClient splits it into batches
        metric_list, param_list, tag_list = _validate_batch_log_data(metric_list, param_list, tag_list)
        run_values: dict[str, Any] = {}  # what changes on the run's row
        if status is not None:
            run_values.update(status=RunStatus.to_string(RunStatus.from_string(status)), end_time=end_ms)
        sql, run = self._sql, {"run": run_id}

        with self._engine.begin() as db:
            stage = db.execute(sql.stage, run).scalar_one_or_none()
            if stage is None:
                raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
            if stage != LifecycleStage.ACTIVE:
                raise MlflowException(
                    f"The run {run_id} must be in the 'active' state. Current state is {stage}.",
                    INVALID_PARAMETER_VALUE,
                )
            if param_list:
                logged = dict(db.execute(sql.params_of, {**run, "keys": [p.key for p in param_list]}).all())
                changed = [
                    {"key": p.key, "old_value": logged[p.key], "new_value": p.value}
                    for p in param_list
                    if p.key in logged and logged[p.key] != p.value
                ]
                if changed:
                    raise MlflowException(
                        "Changing param values is not allowed. Params were already"
                        f" logged='{changed}' for run ID='{run_id}'.",
                        INVALID_PARAMETER_VALUE,
                    )
                new = [{"run_uuid": run_id, "key": p.key, "value": p.value} for p in param_list if p.key not in logged]
                if new:
                    db.execute(sql.insert_params, new)
            if metric_list:
                rows = [self._metric(run_id, m) for m in metric_list]
                db.execute(sql.insert_metrics, rows)
                latest = {r[0]: r[1:] for r in db.execute(sql.latest_of, {**run, "keys": [r["key"] for r in rows]})}
                new = [row for row in rows if row["key"] not in latest]
                if new:
                    db.execute(sql.insert_latest, new)
                # MLflow's rule: the latest value is the one of the greatest (step, timestamp, value)
                newer = [
                    r for r in rows if r["key"] in latest and (r["step"], r["timestamp"], r["value"]) > latest[r["key"]]
                ]
                if newer:
                    db.execute(sql.set_latest, [{f"new_{k}": v for k, v in r.items()} for r in newer])
            if tag_list:
                known = set(db.execute(sql.tags_of, {**run, "keys": [t.key for t in tag_list]}).scalars())
                new = [{"run_uuid": run_id, "key": t.key, "value": t.value} for t in tag_list if t.key not in known]
                if new:
                    db.execute(sql.insert_tags, new)
                again = [
                    {"new_run_uuid": run_id, "new_key": t.key, "new_value": t.value} for t in tag_list if t.key in known
                ]
                if again:
                    db.execute(sql.set_tag, again)
                names = [t.value for t in tag_list if t.key == MLFLOW_RUN_NAME]
                if names:  # MLflow keeps the run's name and this tag alike
                    run_values["name"] = names[-1]
            if run_values:
                db.execute(sql.set_run, {**run, **run_values})
        return True

    def _metric(self, run_id: str, metric) -> dict[str, Any]:
        is_nan, value = self._sanitize(metric.value)
        return {
            "run_uuid": run_id,
            "key": metric.key,
            "value": value,
            "timestamp": metric.timestamp,
            "step": metric.step,
            "is_nan": is_nan,
        }


def revision(store) -> str | None:
    """The schema revision (alembic_version) of `store`'s database."""
    from sqlalchemy import text

    with store.ManagedSessionMaker() as session:
        return session.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _statements():
    """The statements of the lean writes, built once (on MLflow's tables: `dbmodels.models`)."""
    from types import SimpleNamespace

    from mlflow.store.tracking.dbmodels.models import (
        SqlExperiment,
        SqlLatestMetric,
        SqlMetric,
        SqlParam,
        SqlRun,
        SqlTag,
    )
    from sqlalchemy import bindparam, select

    runs, tags, params, latest = SqlRun.__table__, SqlTag.__table__, SqlParam.__table__, SqlLatestMetric.__table__
    experiments = SqlExperiment.__table__

    def of_run(table, *columns):  # the rows of one run with the given keys
        keys = bindparam("keys", expanding=True)
        return select(*(table.c[c] for c in columns)).where(table.c.run_uuid == bindparam("run"), table.c.key.in_(keys))

    def set_row(table, *columns):  # executemany: new_run_uuid, new_key and the new values
        where = (table.c.run_uuid == bindparam("new_run_uuid"), table.c.key == bindparam("new_key"))
        return table.update().where(*where).values({c: bindparam(f"new_{c}") for c in columns})

    return SimpleNamespace(
        insert_run=runs.insert(),
        insert_tags=tags.insert(),
        insert_params=params.insert(),
        insert_metrics=SqlMetric.__table__.insert(),
        insert_latest=latest.insert(),
        set_run=runs.update().where(runs.c.run_uuid == bindparam("run")),  # SET: the columns given
        experiment=select(experiments.c.lifecycle_stage, experiments.c.artifact_location).where(
            experiments.c.experiment_id == bindparam("experiment")
        ),
        stage=select(runs.c.lifecycle_stage).where(runs.c.run_uuid == bindparam("run")),
        params_of=of_run(params, "key", "value"),
        latest_of=of_run(latest, "key", "step", "timestamp", "value"),
        tags_of=of_run(tags, "key"),
        set_latest=set_row(latest, "value", "timestamp", "step", "is_nan"),
        set_tag=set_row(tags, "value"),
    )
