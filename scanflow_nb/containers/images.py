"""Executor and tracker images: build contexts, content-hash tags, builds with streamed output.

A tag is the hash of everything that goes into the image (base image id, Dockerfile, pip settings,
requirements, code): an unchanged executor is found by tag and not rebuilt, and Docker's layer cache
reuses the dependency layer when only the code changed.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import sources
from ..errors import NotFoundError, ScanflowError
from ..files import STATE_DIR
from ..spec import Executor
from . import dockerfile as df
from .base import DEFAULT_BASE_TAG, base_image_exists
from .docker_client import client
from .names import LABEL_APP, LABEL_IMAGE, app_id, check_image_ref, extra_labels, image_repository
from .pipconf import PipSettings, host_pip_settings

DEFAULT_BASE = "python:3.11-slim"
SKIP_DIRS = {STATE_DIR, ".git", "__pycache__", ".ipynb_checkpoints"}
Echo = Callable[[str], None]


class ImageBuildError(ScanflowError):
    """An image could not be built (the message ends with the build's last output lines)."""


_announced: set[str] = set()


def default_base_image(echo: Echo = print) -> str:
    """The base image of generated Dockerfiles.

    $SCANFLOW_BASE_IMAGE when set; else python:3.11-slim when this engine has it; else the base image
    built locally without a registry (`scanflow base-image`, `make machine`), announced once per kernel;
    else python:3.11-slim, pulled by the build (whose error says how to build a local one).
    """
    chosen = os.environ.get("SCANFLOW_BASE_IMAGE")
    if chosen:
        return check_image_ref(chosen, "base image")
    for candidate in (DEFAULT_BASE, DEFAULT_BASE_TAG):
        if not base_image_exists(candidate):
            continue
        if candidate == DEFAULT_BASE_TAG and candidate not in _announced:
            _announced.add(candidate)
            echo(
                f"base image: {DEFAULT_BASE_TAG}, built on this machine ({DEFAULT_BASE} is not on this engine; "
                "set SCANFLOW_BASE_IMAGE to choose another)"
            )
        return candidate
    return DEFAULT_BASE


def mlflow_version() -> str:
    from importlib.metadata import version

    return version("mlflow")


@dataclass
class BuildContext:
    """One image's Dockerfile and files; `tag` is derived from their content."""

    repository: str
    dockerfile: str | None = None  # generated Dockerfile text (None: `files` has a Dockerfile)
    dockerfile_path: str = "Dockerfile"
    files: dict[str, bytes] = field(default_factory=dict)
    base_id: str = ""

    @property
    def tag(self) -> str:
        h = hashlib.sha256(self.base_id.encode() + b"\0" + (self.dockerfile or "").encode())
        for path in sorted(self.files):
            h.update(b"\0" + path.encode() + b"\0" + hashlib.sha256(self.files[path]).digest())
        return f"{self.repository}:{h.hexdigest()[:16]}"

    def tar(self) -> io.BytesIO:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            items = dict(self.files)
            if self.dockerfile is not None:
                items[self.dockerfile_path] = self.dockerfile.encode()
            for path in sorted(items):
                info = tarfile.TarInfo(path)
                info.size, info.mode, info.mtime = len(items[path]), 0o644, 0
                tar.addfile(info, io.BytesIO(items[path]))
        buf.seek(0)
        return buf


def requirements_text(app_dir: Path, executor: Executor) -> str:
    """The executor's requirements plus the MLflow client pinned to the host's MLflow version."""
    return "\n".join([f"mlflow-skinny=={mlflow_version()}", sources.requirements_text(app_dir, executor)]) + "\n"


def _folder_files(folder: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in names:
            path = Path(root, name)
            files[path.relative_to(folder).as_posix()] = path.read_bytes()
    return files


class ImageBuilder:
    """Builds (or finds by tag) the images of executors and of the tracker, streaming build output."""

    def __init__(self, base_image: str | None = None, pip: PipSettings | None = None, echo: Echo = print):
        self._base_image = check_image_ref(base_image, "base image") if base_image else None
        self._pip = pip
        self.echo = echo
        self._lock = threading.Lock()

    @property
    def base_image(self) -> str:
        """The base of generated Dockerfiles: as given, else `default_base_image()` (asked once, on first use)."""
        if self._base_image is None:
            self._base_image = default_base_image(self.echo)
        return self._base_image

    @property
    def pip(self) -> PipSettings:
        if self._pip is None:
            self._pip = host_pip_settings()
            if self._pip.skipped:
                self.echo(
                    f"note: pip sources on host paths are not reachable inside a build and are left out "
                    f"({', '.join(self._pip.skipped)}); builds use the other indexes (PyPI by default)"
                )
        return self._pip

    # -- contexts ----------------------------------------------------------------------------
    def _base_id(self) -> str:
        import docker.errors

        try:
            return client().images.get(self.base_image).id
        except docker.errors.ImageNotFound:
            return self.base_image  # a registry image, pulled by the build

    def _pip_files(self) -> dict[str, bytes]:
        files = {df.PIP_CONF: self.pip.pip_conf().encode()}
        cert = self.pip.cert_bytes()
        if cert:
            files[df.CERT] = cert
        return files

    def executor_context(self, app_dir: Path, workflow: str, executor: Executor) -> BuildContext | None:
        """The build context of an executor's image; None when it names an existing image."""
        app_dir = Path(app_dir)
        repository = image_repository(workflow, executor.name)
        if executor.dockerfile:
            path = app_dir / executor.dockerfile
            if not path.is_file():
                raise NotFoundError(f"executor {executor.name!r}: Dockerfile {executor.dockerfile!r} not found")
            return BuildContext(repository, dockerfile_path=path.name, files=_folder_files(path.parent))
        if executor.image:
            check_image_ref(executor.image, f"executor {executor.name!r} image")
            return None
        files = self._pip_files()
        files[df.REQUIREMENTS] = requirements_text(app_dir, executor).encode()
        code = sources.executor_code(app_dir, workflow, executor)
        code_files = []
        if code:
            files["code/" + code[0]] = code[1]
            code_files.append(code[0])
        return BuildContext(
            repository,
            df.executor_dockerfile(self.base_image, self.pip, code_files),
            files=files,
            base_id=self._base_id(),
        )

    def service_context(
        self, app_dir: Path, workflow: str, executor: Executor, model_requirements: list[str]
    ) -> BuildContext:
        """A model service's image: its requirements, the model's, pandas, and scanflow_nb for `scanflow serve`."""
        files = self._pip_files()
        wanted = [requirements_text(app_dir, executor).strip(), "pandas", *model_requirements]
        files[df.REQUIREMENTS] = ("\n".join(wanted) + "\n").encode()
        package = Path(__file__).resolve().parents[1]
        files.update({f"lib/scanflow_nb/{path}": data for path, data in _folder_files(package).items()})
        return BuildContext(
            image_repository(workflow, executor.name),
            df.executor_dockerfile(self.base_image, self.pip, [], library=True),
            files=files,
            base_id=self._base_id(),
        )

    def service_image(self, app_dir: Path, workflow: str, executor: Executor, model_requirements: list[str]) -> str:
        """The tag of a model service's image, built first if no image has that tag."""
        ctx = self.service_context(app_dir, workflow, executor, model_requirements)
        return self.build(ctx, f"{workflow}/{executor.name}", {LABEL_APP: app_id(app_dir)})

    def tracker_context(self) -> BuildContext:
        files = self._pip_files()
        files[df.REQUIREMENTS] = f"mlflow=={mlflow_version()}\n".encode()
        return BuildContext(
            "scanflow/tracker", df.tracker_dockerfile(self.base_image, self.pip), files=files, base_id=self._base_id()
        )

    # -- builds ------------------------------------------------------------------------------
    def executor_image(self, app_dir: Path, workflow: str, executor: Executor) -> str:
        """The tag of the executor's image, built first if no image has that tag."""
        ctx = self.executor_context(app_dir, workflow, executor)
        if ctx is None:
            return self._existing(executor.image, executor.name)
        return self.build(ctx, f"{workflow}/{executor.name}", {LABEL_APP: app_id(app_dir)})

    def tracker_image(self) -> str:
        return self.build(self.tracker_context(), "tracker")

    def build(self, ctx: BuildContext, what: str, labels: dict[str, str] | None = None) -> str:
        """The image of `ctx`, built unless its tag exists; labelled with what it is for and `labels`."""
        import docker.errors

        tag = ctx.tag
        with self._lock:
            try:
                client().images.get(tag)
                self.echo(f"[build {what}] up to date: {tag}")
                return tag
            except docker.errors.ImageNotFound:
                pass
            self.echo(f"[build {what}] building {tag} from {self.base_image}")
            tail: list[str] = []
            try:
                stream = client().api.build(
                    fileobj=ctx.tar(),
                    custom_context=True,
                    dockerfile=ctx.dockerfile_path,
                    tag=tag,
                    rm=True,
                    forcerm=True,
                    decode=True,
                    labels={LABEL_IMAGE: what, **extra_labels(), **(labels or {})},
                )
                for chunk in stream:
                    if "error" in chunk:
                        hint = (
                            f"; without a registry, build the local base image with `scanflow base-image` "
                            f"(or `make machine`): docker runs then use {DEFAULT_BASE_TAG} by themselves"
                            if tail[-1:] and " FROM " in tail[-1]
                            else ""
                        )
                        raise ImageBuildError(
                            f"building the image of {what} failed: {chunk['error'].strip()}"
                            + (f" (last output: {' | '.join(tail[-3:])})" if tail else "")
                            + hint
                        )
                    for line in (chunk.get("stream") or "").splitlines():
                        if line.strip():
                            tail = (tail + [line.strip()])[-10:]
                            self.echo(f"[build {what}] {line.rstrip()}")
            except docker.errors.APIError as exc:
                raise ImageBuildError(f"building the image of {what} failed: {exc.explanation or exc}") from None
            return tag

    def _existing(self, image: str, name: str) -> str:
        import docker.errors

        try:
            client().images.get(image)
        except docker.errors.ImageNotFound:
            try:
                self.echo(f"[build {name}] pulling {image}")
                client().images.pull(image)
            except docker.errors.APIError as exc:
                raise ImageBuildError(
                    f"executor {name!r}: image {image!r} is not on this engine and "
                    f"cannot be pulled ({exc.explanation or exc})"
                ) from None
        return image
