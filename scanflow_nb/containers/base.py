"""A Python base image built without any registry: Debian packages via debootstrap, then `docker import`.

For air-gapped machines (and this project's tests) where `python:3.11-slim` cannot be pulled.
The image mirrors that one's habits: `python` and `pip` on PATH, installs allowed (a venv at /opt/venv).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import ScanflowError
from .docker_client import client

DEFAULT_BASE_TAG = "scanflow/python:3.11-bookworm"
PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
VENV = "/opt/venv"
_CHANGES = (
    f"ENV PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "ENV PYTHONUNBUFFERED=1",
    'CMD ["python"]',
)


class BaseImageError(ScanflowError):
    """The base image could not be built."""


def apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt is configured with (deb822 `.sources` or one-line `sources.list`)."""
    candidates = sorted(sources.glob("sources.list.d/*.sources")) + [sources / "sources.list"]
    for path in candidates:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            line = line.strip()
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
            if line.startswith("deb ") and "security" not in line and "debian" in line:
                return next(w for w in line.split()[1:] if "://" in w)
    return "http://deb.debian.org/debian"


def base_image_exists(tag: str = DEFAULT_BASE_TAG) -> bool:
    import docker.errors

    try:
        client().images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def build_base_image(
    tag: str = DEFAULT_BASE_TAG,
    suite: str = "bookworm",
    mirror: str | None = None,
    force: bool = False,
    echo: Callable[[str], None] = print,
) -> str:
    """Build (or reuse, unless `force`) a Debian `suite` Python image tagged `tag`; return the tag.

    Needs root and `debootstrap` on the host, and a reachable Debian mirror (apt's own by default).
    """
    if not force and base_image_exists(tag):
        echo(f"base image {tag} already exists (force=True rebuilds it)")
        return tag
    if shutil.which("debootstrap") is None:
        raise BaseImageError("debootstrap is not installed: run `apt-get install -y debootstrap` (needs root)")
    if os.geteuid() != 0:
        raise BaseImageError("building the base image needs root (debootstrap creates device files)")
    mirror = mirror or apt_mirror()
    with tempfile.TemporaryDirectory(prefix="scanflow-base-") as tmp:
        rootfs = Path(tmp, "rootfs")
        _stream(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite, str(rootfs), mirror],
            echo,
            "debootstrap",
        )
        _stream(["chroot", str(rootfs), "python3", "-m", "venv", VENV], echo, "creating the venv")
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True)
        archive = Path(tmp, "rootfs.tar")
        _stream(["tar", "-C", str(rootfs), "-cf", str(archive), "."], echo, "tar")
        repository, _, version = tag.rpartition(":") if ":" in tag.split("/")[-1] else (tag, "", "latest")
        echo(f"importing {archive.stat().st_size // 2**20} MB as {tag}")
        client().api.import_image_from_file(str(archive), repository=repository, tag=version, changes=list(_CHANGES))
    echo(f"base image {tag} ready")
    return tag


def _stream(cmd: list[str], echo: Callable[[str], None], what: str) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        echo(line)
        tail = (tail + [line])[-5:]
    if proc.wait() != 0:
        raise BaseImageError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")
