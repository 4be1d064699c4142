"""Generated Dockerfiles: base image, pip settings, a non-root user, dependencies, then code.

The dependency layer comes before the code layer, so a code-only change rebuilds only the last layers.
"""

from __future__ import annotations

from .pipconf import CERT_IN_IMAGE, PipSettings

USER, UID = "scanflow", 10001
CODE_DIR = "/opt/scanflow/app"  # executor code inside the image (same relative paths as in the app)
LIBRARY_DIR = "/opt/scanflow/lib"  # scanflow_nb itself, in the images of model services
WORKSPACE = "/workspace"  # working directory when the app folder is not mounted at its own path
PIP_CONF, CERT, REQUIREMENTS = "scanflow-pip.conf", "scanflow-ca.crt", "scanflow-requirements.txt"


def _prologue(base: str, pip: PipSettings, home_dirs: str) -> list[str]:
    lines = [f"FROM {base}", "USER root", f"COPY {PIP_CONF} /etc/pip.conf", "ENV PIP_CONFIG_FILE=/etc/pip.conf"]
    if pip.cert:
        lines += [f"COPY {CERT} {CERT_IN_IMAGE}", f"ENV PIP_CERT={CERT_IN_IMAGE}"]
    lines.append(
        f"RUN (id -u {USER} >/dev/null 2>&1 || useradd --uid {UID} --create-home --shell /bin/sh {USER})"
        f" && mkdir -p {home_dirs} && chown {USER} {home_dirs}"
    )
    return lines


def executor_dockerfile(base: str, pip: PipSettings, code_files: list[str], library: bool = False) -> str:
    """Dockerfile for an executor: requirements (MLflow client included) then its code files.

    `library`: the context's folder `lib/` (scanflow_nb itself, to run `scanflow serve`) goes on the path.
    """
    lines = _prologue(base, pip, WORKSPACE)
    lines += [
        f"COPY {REQUIREMENTS} /opt/scanflow/requirements.txt",
        "RUN python -m pip install -r /opt/scanflow/requirements.txt",
    ]
    if library:
        site = "$(python -c 'import sysconfig; print(sysconfig.get_path(\"purelib\"))')"
        lines += [f"COPY lib {LIBRARY_DIR}", f'RUN echo {LIBRARY_DIR} > "{site}/scanflow.pth"']
    lines += [
        f"WORKDIR {WORKSPACE}",
        f"USER {USER}",
        f"ENV HOME=/home/{USER} PYTHONUNBUFFERED=1 GIT_PYTHON_REFRESH=quiet",
    ]
    lines += [f"COPY code/{path} {CODE_DIR}/{path}" for path in code_files]
    return "\n".join(lines) + "\n"


def tracker_dockerfile(base: str, pip: PipSettings) -> str:
    """Dockerfile for the tracker: the full `mlflow` package (its server), store under /data."""
    lines = _prologue(base, pip, "/data")
    lines += [
        f"COPY {REQUIREMENTS} /opt/scanflow/requirements.txt",
        "RUN python -m pip install -r /opt/scanflow/requirements.txt",
        "WORKDIR /data",
        f"USER {USER}",
        f"ENV HOME=/home/{USER} PYTHONUNBUFFERED=1",
        "EXPOSE 5000",
    ]
    return "\n".join(lines) + "\n"
