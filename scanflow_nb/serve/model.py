"""Which model answers: MLflow pyfunc models loaded by URI, and a thread that follows a registry alias.

`models:/NAME@ALIAS` (and `models:/NAME/latest`) move when the planner promotes a version: `AliasFollower`
asks the registry every few seconds which version the URI means, loads a new one in the background and hands
it over; the service swaps one reference, so requests see the old model or the new one, never neither.
Everything goes through an explicit tracking URI (no process-wide MLflow state).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NotFoundError, ScanflowError, TrackerError

log = logging.getLogger("scanflow_nb.serve")
DOWNLOADS = "scanflow-model-"  # + the process id: the prefix of downloaded models' folders
_REGISTERED = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<suffix>[^/]+))$")


@dataclass
class LoadedModel:
    """A pyfunc model ready to answer, and which registered version it is (None outside the registry)."""

    uri: str
    pyfunc: Any
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    load_seconds: float = 0.0
    loaded_at: float = field(default_factory=time.time)
    folder: str | None = None  # downloaded files, removed with `discard`

    def __post_init__(self) -> None:
        raw = None
        try:
            raw = self.pyfunc.get_raw_model()
        except Exception:  # flavors without a raw model (NotImplementedError) or with a failing one
            raw = None
        self.predict_proba: Callable | None = getattr(raw, "predict_proba", None)
        self.takes_frames = hasattr(raw, "feature_names_in_")  # fitted on named columns: give it the frame
        classes = getattr(raw, "classes_", None)
        self.classes = None if classes is None else [c.item() if hasattr(c, "item") else c for c in classes]
        self.input_schema = self.pyfunc.metadata.get_input_schema()

    @property
    def label(self) -> str:
        return f"v{self.version}" if self.version else self.uri

    def info(self) -> dict[str, Any]:
        return {
            "model_uri": self.uri,
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "loaded_at": self.loaded_at,
            "load_seconds": round(self.load_seconds, 3),
        }

    def discard(self) -> None:
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)


def follows(uri: str) -> bool:
    """True if `uri` names a registered model by alias or as `latest`: the version behind it can move."""
    found = _REGISTERED.fullmatch(uri)
    return bool(found) and (found["alias"] is not None or not found["suffix"].isdigit())


def registered_name(uri: str) -> str | None:
    found = _REGISTERED.fullmatch(uri)
    return found["name"] if found else None


def resolve_version(uri: str, tracking_uri: str) -> str | None:
    """The registered version `uri` means now (None for a model outside the registry)."""
    if registered_name(uri) is None:
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    from ..track import get_client

    try:
        return str(get_model_name_and_version(get_client(tracking_uri), uri)[1])
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "INVALID_PARAMETER_VALUE" in str(exc.error_code):
            raise NotFoundError(f"no model behind {uri} at {tracking_uri}: {exc.message}") from None
        raise TrackerError(f"cannot ask the model registry at {tracking_uri} about {uri}: {exc.message}") from None


def _download_folder() -> str:
    """A new folder for a model's files, named after this process. Folders of processes that are gone
    (a service killed outright never removes its own) are removed first."""
    for old in Path(tempfile.gettempdir()).glob(f"{DOWNLOADS}*-*"):
        pid = old.name[len(DOWNLOADS) :].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{DOWNLOADS}{os.getpid()}-")


def load_model(uri: str, tracking_uri: str, version: str | None = None) -> LoadedModel:
    """Load `uri` (for a registered model: its `version`, or the one the URI means now) as a pyfunc model."""
    import mlflow.artifacts
    import mlflow.pyfunc

    from ..track import get_client

    started = time.monotonic()
    name = registered_name(uri)
    run_id = None
    if name is not None:
        version = version or resolve_version(uri, tracking_uri)
        client = get_client(tracking_uri)
        run_id = client.get_model_version(name, version).run_id
        source = client.get_model_version_download_uri(name, version)
    else:
        source = uri
    if Path(source).exists():
        folder, local = None, source
    else:
        folder = _download_folder()
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=tracking_uri, dst_path=folder)
        except Exception as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise NotFoundError(f"cannot download the model {uri} from {tracking_uri}: {exc}") from None
    try:
        pyfunc = mlflow.pyfunc.load_model(local)
    except Exception as exc:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        raise ScanflowError(f"cannot load {uri} as an MLflow pyfunc model: {exc}") from None
    return LoadedModel(uri, pyfunc, name, version, run_id, time.monotonic() - started, folder=folder)


def requirements(uri: str, tracking_uri: str) -> list[str]:
    """The pip requirements the model behind `uri` was logged with (MLflow itself left out: images bring theirs)."""
    import mlflow.artifacts

    from ..track import get_client

    name = registered_name(uri)
    if name is not None:
        uri = get_client(tracking_uri).get_model_version_download_uri(name, resolve_version(uri, tracking_uri))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{uri.rstrip('/')}/requirements.txt", tracking_uri=tracking_uri, dst_path=tmp
            )
        except Exception:  # a model logged without one: the image's own requirements must do
            return []
        lines = [line.strip() for line in Path(path).read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#") and not re.match(r"mlflow(-skinny)?\b", line)]


class AliasFollower:
    """Polls the registry every `every` s; when the version behind `uri` changes, loads it and calls `on_switch`.

    `on_switch(new)` receives the loaded model; `on_error(message)` hears about failures (a version that
    cannot be loaded is tried again only when the alias moves again). The thread never dies silently.
    """

    def __init__(
        self,
        uri: str,
        tracking_uri: str,
        current: str | None,
        on_switch: Callable[[LoadedModel], None],
        on_error: Callable[[str], None],
        every: float = 2.0,
    ):
        self.uri, self.tracking_uri, self.every = uri, tracking_uri, every
        self.current, self.on_switch, self.on_error = current, on_switch, on_error
        self._failed: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"scanflow-follow-{uri}", daemon=True)

    def start(self) -> AliasFollower:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def check(self) -> bool:
        """One look at the registry; True if a new version was loaded and handed over."""
        version = resolve_version(self.uri, self.tracking_uri)
        if version in (self.current, self._failed):
            return False
        try:
            model = load_model(self.uri, self.tracking_uri, version)
        except ScanflowError as exc:
            self._failed = version
            self.on_error(f"{self.uri} moved to v{version} but it cannot be served (v{self.current} goes on): {exc}")
            return False
        self.on_switch(model)
        self.current, self._failed = version, None
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.check()
            except Exception as exc:  # registry unreachable, ...: say so and keep following
                self.on_error(f"following {self.uri}: {type(exc).__name__}: {exc}")
