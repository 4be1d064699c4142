"""A run's per-step writes to an embedded (SQLite) MLflow store, in one transaction each.

Through MlflowClient, one executor's run costs a creation, a `log_batch` and a `set_terminated`: about
a dozen SQL statements each (an eager experiment read, a dataset query, a full run load per status,
an existence check per key), 25-30 ms of the kernel's CPU a step. `LeanWrites` does the same two
things a run needs, with MLflow's own schema objects (`mlflow.store.tracking.dbmodels.models`), its
validation helpers and its session maker (same engine, same error codes):

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

import uuid
from typing import Any

# MLflow schema revisions whose runs, written here, read back as MLflow's own (tests/test_lean_writes.py)
VERIFIED = {"dc11669786a5"}  # MLflow 3.17


class LeanWrites:
    """Creations and write-outs of runs in one SQLite store; see the module's doc."""

    def __init__(self, store):
        self._sessions = store.ManagedSessionMaker
        self._sanitize = store.sanitize_metric_value  # NaN as 0 with is_nan, +-inf as the largest doubles

    @classmethod
    def open(cls, client) -> LeanWrites | None:
        """The lean writes for `client`'s store, or None where MlflowClient must write (not SQLite, or
        a schema revision no test verified)."""
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = getattr(getattr(client, "_tracking_client", None), "store", None)
        if not isinstance(store, SqlAlchemyStore) or store.db_type != "sqlite":
            return None
        return cls(store) if revision(store) in VERIFIED else None

    def create(self, experiment_id: str, name: str, start_ms: int, tags: dict[str, str]) -> tuple[str, str]:
        """A RUNNING run and its tags in one transaction; returns (run id, artifact uri)."""
        from mlflow.entities import LifecycleStage, RunStatus, SourceType
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
        from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlRun, SqlTag
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
        with self._sessions(read_only=False) as session:
            experiment = session.get(SqlExperiment, int(experiment_id))
            if experiment is None:
                raise MlflowException(f"No Experiment with id={experiment_id} exists", RESOURCE_DOES_NOT_EXIST)
            if experiment.lifecycle_stage != LifecycleStage.ACTIVE:
                raise MlflowException(
                    f"The experiment {experiment_id} must be in the 'active' state. "
                    f"Current state is {experiment.lifecycle_stage}.",
                    INVALID_PARAMETER_VALUE,
                )
            artifact_uri = append_to_uri_path(
                experiment.artifact_location, run_id, SqlAlchemyStore.ARTIFACTS_FOLDER_NAME
            )
            run = SqlRun(
                name=name,
                artifact_uri=artifact_uri,
                run_uuid=run_id,
                experiment_id=int(experiment_id),
                source_type=SourceType.to_string(SourceType.UNKNOWN),
                source_name="",
                entry_point_name="",
                user_id=tags.get(MLFLOW_USER, "unknown"),
                status=RunStatus.to_string(RunStatus.RUNNING),
                start_time=start_ms,
                end_time=None,
                deleted_time=None,
                source_version="",
                lifecycle_stage=LifecycleStage.ACTIVE,
            )
            run.tags = [SqlTag(key=key, value=value) for key, value in tags.items()]
            session.add(run)
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
        from mlflow.entities import Metric, Param, RunStatus, RunTag
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
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

        with self._sessions(read_only=False) as session:
            run = _active_run(session, SqlRun, run_id)
            if param_list:
                keys = [p.key for p in param_list]
                query = session.query(SqlParam.key, SqlParam.value)
                logged = dict(query.filter(SqlParam.run_uuid == run_id, SqlParam.key.in_(keys)).all())
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
                session.add_all(
                    SqlParam(run_uuid=run_id, key=p.key, value=p.value) for p in param_list if p.key not in logged
                )
            if metric_list:
                rows = [SqlMetric(run_uuid=run_id, **self._metric(m)) for m in metric_list]
                session.add_all(rows)
                query = session.query(SqlLatestMetric)
                latest = {
                    m.key: m
                    for m in query.filter(
                        SqlLatestMetric.run_uuid == run_id, SqlLatestMetric.key.in_([r.key for r in rows])
                    )
                }
                for row in rows:
                    old = latest.get(row.key)
                    if old is None:
                        session.add(SqlLatestMetric(run_uuid=run_id, **_columns(row)))
                    elif (row.step, row.timestamp, row.value) > (old.step, old.timestamp, old.value):
                        old.value, old.step, old.timestamp, old.is_nan = row.value, row.step, row.timestamp, row.is_nan
            if tag_list:
                query = session.query(SqlTag)
                existing = {
                    t.key: t for t in query.filter(SqlTag.run_uuid == run_id, SqlTag.key.in_([t.key for t in tag_list]))
                }
                for tag in tag_list:
                    if tag.key == MLFLOW_RUN_NAME:
                        run.name = tag.value
                    if tag.key in existing:
                        existing[tag.key].value = tag.value
                    else:
                        session.add(SqlTag(run_uuid=run_id, key=tag.key, value=tag.value))
            if status is not None:
                run.status = RunStatus.to_string(RunStatus.from_string(status))
                run.end_time = end_ms
        return True

    def _metric(self, metric) -> dict[str, Any]:
        is_nan, value = self._sanitize(metric.value)
        return {"key": metric.key, "value": value, "timestamp": metric.timestamp, "step": metric.step, "is_nan": is_nan}


def revision(store) -> str | None:
    """The schema revision (alembic_version) of `store`'s database."""
    from sqlalchemy import text

    with store.ManagedSessionMaker() as session:
        return session.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _active_run(session, SqlRun, run_id: str):
    from mlflow.entities import LifecycleStage
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST

    run = session.get(SqlRun, run_id)
    if run is None:
        raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
    if run.lifecycle_stage != LifecycleStage.ACTIVE:
        raise MlflowException(
            f"The run {run_id} must be in the 'active' state. Current state is {run.lifecycle_stage}.",
            INVALID_PARAMETER_VALUE,
        )
    return run


def _columns(metric) -> dict[str, Any]:
    return {name: getattr(metric, name) for name in ("key", "value", "timestamp", "step", "is_nan")}
