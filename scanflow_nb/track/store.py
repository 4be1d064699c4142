"""The embedded store: SQLite plus an artifact folder inside the app's state folder.

The store heals: when a kernel finds its `mlflow.db` deleted, replaced or damaged (corrupt, or not a
SQLite database any more; a store busy with another process's write is not damaged), it reconnects
every client it holds, keeps a damaged file aside, creates a new store (MLflow's migrations run
again) and says so in one line, instead of failing every later run with a traceback until the
kernel restarts.

The store writes ahead (SQLite's WAL journal, kept in the file) and this process's connections commit
without waiting for the disk (`synchronous=NORMAL`): a commit is one append, readers in other processes
(the checker, a service's logger) never wait for a writer, and a killed process loses no commit; only a
power cut may lose the last few, never the store. Each run's creation, batch and status cost 3-4x less.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import stat
import sys
import tempfile
import threading
import time
from contextlib import closing
from functools import cache
from pathlib import Path

from ..errors import NotFoundError, TrackerError

_lock = threading.Lock()
_known: dict[Path, tuple[int, int]] = {}  # store file -> (device, inode) when this kernel last found it sound
_stores: set[Path] = set()  # the SQLite stores this process opened: their connections commit without fsync
DAMAGE_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}  # a busy or locked store is in use, not damaged
BUSY_WAIT = 1.0  # seconds the check waits for another process's write; MLflow's own calls wait longer
TEMPLATE_ARTIFACTS = "/scanflow-template-artifacts"  # the template's artifact root, replaced in each copy
JOURNALS = ("-wal", "-shm", "-journal")  # SQLite's files beside a store
# every connection to a store of ours: commits without fsync, and what MLflow's sessions set (mlflow.store.db.utils),
# so that writes outside its sessions (track.lean) run under the same rules
CONNECTION_PRAGMAS = (
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 20000",
    "PRAGMA case_sensitive_like = true",
)
UNCHECKED = "unchecked"  # the check could not finish (busy, locked, unreadable): never a reason to set aside


def embedded_uri(state_dir: Path) -> str:
    """The tracking URI of the SQLite store in `state_dir` (created on first use)."""
    return f"sqlite:///{Path(state_dir) / 'mlflow.db'}"


def artifact_root(state_dir: Path) -> Path:
    return default_artifact_root(embedded_uri(state_dir))


@cache
def _quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # the run summary already says where runs are; MLflow would add two lines per closed run
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for noisy in ("mlflow.store.db.utils", "alembic"):  # table creation chatter, not news for a user
        logging.getLogger(noisy).setLevel(logging.WARNING)


@cache
def _client(uri: str):
    _quiet_mlflow()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def get_client(uri: str):
    """One MlflowClient per tracking URI for the whole kernel (creating one for SQLite is slow).

    An embedded store that was deleted, replaced or damaged since the last call is healed first.
    """
    with _lock:
        try:
            if path := sqlite_path(uri):
                _stores.add(path.resolve())
                _commit_without_fsync()
            heal(uri)
            return _client(uri)
        except TrackerError:
            raise
        except Exception as exc:  # mlflow raises many kinds; the user needs one line
            raise TrackerError(f"cannot open the MLflow store at {uri}: {exc}") from None


def heal(uri: str) -> str | None:
    """Make the SQLite store at `uri` usable again if it was deleted, replaced or damaged; returns the note said."""
    path = sqlite_path(uri)
    if path is None:
        return None
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):  # MLflow would retry opening it for about 100 s
        raise TrackerError(f"cannot open the MLflow store at {uri}: {path} is not a file; move it away")
    note = None
    if st is None:
        if _dispose_engines(path):  # else never opened by this kernel: created below, as a first use would
            note = f"the MLflow store {path} was deleted: created a new, empty one (earlier runs are not in it)"
        for suffix in JOURNALS:  # a deleted store's journal must never be replayed into the new one
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    elif (damage := _damage(path, st.st_size, path in _known)) == UNCHECKED:
        return None  # checked again on the next call
    elif damage is None:
        known, _known[path] = _known.get(path), (st.st_dev, st.st_ino)
        if known == _known[path]:
            return None
        if known:
            _dispose_engines(path)  # another file now (a restored backup, another kernel's repair): reopen it
        _write_ahead(path)
        return None
    else:
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", *JOURNALS):
            if Path(f"{path}{suffix}").exists():
                os.replace(f"{path}{suffix}", f"{aside}{suffix}")
        _dispose_engines(path)
        note = f"the MLflow store {path} was damaged ({damage}): kept it as {aside.name}, created a new, empty one"
    _quiet_mlflow()
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    artifacts = default_artifact_root(uri)
    if not _copy_of_template(path, artifacts):
        SqlAlchemyStore(uri, str(artifacts))  # MLflow's migrations create the tables
    _write_ahead(path)
    st = path.stat()
    _known[path] = (st.st_dev, st.st_ino)
    if note:
        print(f"[scanflow] {note}", file=sys.stderr, flush=True)
    return note


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def _damage(path: Path, size: int, known: bool) -> str | None:
    """Why the file at `path` is not a usable SQLite database, None if it is, UNCHECKED if the check could
    not finish, e.g. while another process writes (only a corrupt file or not a database is damage)."""
    if size == 0:
        return "emptied" if known else None  # a new, empty file is how SQLite starts one
    # only through SQLite: closing any other descriptor of the file drops this process's SQLite locks
    # (POSIX locks are per process), and another process could then delete the write-ahead log in use
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_WAIT)) as db:
            if known:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            else:  # first sight in this kernel: every page (a truncated copy passes the line above)
                verdict = db.execute("PRAGMA quick_check").fetchone()[0]
                if verdict != "ok":
                    return verdict
    except sqlite3.DatabaseError as exc:
        code = (exc.sqlite_errorcode or 0) & 0xFF
        if code == sqlite3.SQLITE_NOTADB:
            return "not a SQLite database"
        return str(exc) if code in DAMAGE_CODES else UNCHECKED
    return None


def _copy_of_template(path: Path, artifacts: Path) -> bool:
    """Make the new store at `path` a copy of an empty one, migrated once per MLflow version in the user's
    cache: MLflow's migrations take seconds, a copy milliseconds. False if no template could be had."""
    try:
        template = _template()
        path.parent.mkdir(parents=True, exist_ok=True)
        new = path.with_name(f".{path.name}.{os.getpid()}.new")
        shutil.copyfile(template, new)
        now = int(time.time() * 1000)
        with closing(sqlite3.connect(new)) as db, db:  # the default experiment's folder and times are this store's
            db.execute(
                "UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?),"
                " creation_time = ?, last_update_time = ? WHERE experiment_id = 0",
                (TEMPLATE_ARTIFACTS, str(artifacts), now, now),
            )
        try:
            os.link(new, path)  # never over a store another process made meanwhile
        except FileExistsError:
            pass
        finally:
            new.unlink()
    except (OSError, sqlite3.Error):
        return False
    return True


def _template() -> Path:
    import mlflow
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "scanflow_nb"
    template = folder / f"empty-mlflow-{mlflow.__version__}.db"
    if not template.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            made = Path(scratch) / "mlflow.db"
            SqlAlchemyStore(f"sqlite:///{made}", TEMPLATE_ARTIFACTS)
            _dispose_engines(made)
            os.replace(made, template)  # whole or not at all, whoever makes it last
    return template


def _write_ahead(path: Path) -> None:
    """Switch the store to the WAL journal (a no-op once done: the file keeps it). Busy: the next open does."""
    try:
        with closing(sqlite3.connect(path, timeout=BUSY_WAIT)) as db:
            db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:
        pass


@cache
def _commit_without_fsync() -> None:
    """Every new connection of this process to one of its stores gets `CONNECTION_PRAGMAS` (WAL keeps a
    commit without fsync safe)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.listen(Engine, "connect", _on_connect)


def _on_connect(dbapi_connection, _record) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        name = dbapi_connection.execute("PRAGMA database_list").fetchone()[2]
        if name and Path(name).resolve() in _stores:
            for pragma in CONNECTION_PRAGMAS:
                dbapi_connection.execute(pragma)


def _dispose_engines(path: Path) -> bool:
    """Close MLflow's pooled connections to `path`, so every client reopens the file; False if there were none.

    MLflow keeps one SQLAlchemy engine per database URI for all its stores (tracking and registry).
    """
    if "mlflow" not in sys.modules:
        return False
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    found = False
    for store in (SqlAlchemyStore, RegistryStore):
        for engine in list(getattr(store, "_engine_map", {}).values()):
            if engine.url.database and Path(engine.url.database) == path:
                engine.dispose()
                found = True
    return found


def log_values(
    client,
    run_id: str,
    params: dict | None = None,
    metrics: dict | None = None,
    tags: dict | None = None,
    step: int = 0,
    timestamp_ms: int | None = None,
) -> None:
    """Log plain dicts to run `run_id`: params and tags as strings, metrics as floats at one time.

    Values that are None are left out; as many `log_batch` calls as MLflow's batch limits need
    (one for up to 100 params, 100 tags and 800 metrics). The one place that turns dicts into
    MLflow entities.
    """
    import time

    from mlflow.entities import Metric, Param, RunTag

    now = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
    metric_list = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items() if v is not None]
    param_list = [Param(k, str(v)) for k, v in (params or {}).items() if v is not None]
    tag_list = [RunTag(k, str(v)) for k, v in (tags or {}).items() if v is not None]
    while True:
        batch = (metric_list[:BATCH_METRICS], param_list[:BATCH_PARAMS], tag_list[:BATCH_TAGS])
        client.log_batch(run_id, metrics=batch[0], params=batch[1], tags=batch[2])
        metric_list, param_list, tag_list = (
            metric_list[BATCH_METRICS:],
            param_list[BATCH_PARAMS:],
            tag_list[BATCH_TAGS:],
        )
        if not (metric_list or param_list or tag_list):
            return


# MLflow's log_batch limits: 100 params, 100 tags, 1000 metrics, 1000 entities in all
BATCH_PARAMS, BATCH_TAGS, BATCH_METRICS = 100, 100, 800


def default_artifact_root(tracking_uri: str) -> Path | None:
    """Where a SQLite store's artifacts go: beside the database, never the current folder."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///") :]).parent / "mlartifacts"
    return None


def experiment_id(client, name: str, create: bool = True) -> str:
    """The id of experiment `name`; created if missing (and `create`), restored if deleted."""
    try:
        found = client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                client.restore_experiment(found.experiment_id)
            return found.experiment_id
    except Exception as exc:
        raise TrackerError(f"cannot reach MLflow at {client.tracking_uri}: {exc}") from None
    if not create:
        raise NotFoundError(f"MLflow experiment {name!r} does not exist at {client.tracking_uri}")
    root = default_artifact_root(client.tracking_uri)
    try:
        return client.create_experiment(name, artifact_location=(root / name).as_uri() if root else None)
    except Exception as exc:
        raced = _existing(client, name)  # another thread or process created it meanwhile
        if raced is not None:
            return raced
        raise TrackerError(f"cannot create MLflow experiment {name!r} at {client.tracking_uri}: {exc}") from None


def _existing(client, name: str) -> str | None:
    try:
        found = client.get_experiment_by_name(name)
    except Exception:
        return None
    return found.experiment_id if found is not None else None
