"""The host's pip settings, carried into image builds.

Machines behind TLS-intercepting proxies (and private indexes) cannot `pip install` inside a build
unless the build uses the same index URLs and CA bundle as the host. We read them the way pip does
(`pip config list`, then PIP_* environment variables, which win) and write them into the build
context as a pip.conf and a CA bundle file.

Local `file://` indexes and find-links folders are host paths a build cannot see: they are left out,
and `PipSettings.skipped` says which, so the build log can tell the user.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

CERT_IN_IMAGE = "/etc/scanflow/ca-bundle.crt"


@dataclass(frozen=True)
class PipSettings:
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    trusted_hosts: tuple[str, ...] = ()
    cert: Path | None = None
    skipped: tuple[str, ...] = field(default=(), compare=False)

    def pip_conf(self) -> str:
        """The pip.conf text for the image (the CA bundle is referenced at its in-image path)."""
        lines = ["[global]", "disable-pip-version-check = true", "no-cache-dir = true"]
        if self.index_url:
            lines.append(f"index-url = {self.index_url}")
        if self.extra_index_urls:
            lines.append("extra-index-url = " + " ".join(self.extra_index_urls))
        if self.trusted_hosts:
            lines.append("trusted-host = " + " ".join(self.trusted_hosts))
        if self.cert:
            lines.append(f"cert = {CERT_IN_IMAGE}")
        return "\n".join(lines) + "\n"

    def cert_bytes(self) -> bytes | None:
        return self.cert.read_bytes() if self.cert else None


def _pip_config() -> dict[str, str]:
    """`pip config list` as {key without scope: value}; later scopes (user, site, env) win."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    values: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.split(".", 1)[-1]] = value.strip().strip("'\"")
    return values


def host_pip_settings(environ: dict[str, str] | None = None) -> PipSettings:
    """The index, extra indexes, trusted hosts and CA bundle pip uses on this host."""
    env = os.environ if environ is None else environ
    conf = _pip_config()

    def get(name: str) -> str | None:
        return env.get("PIP_" + name.upper().replace("-", "_")) or conf.get(name)

    skipped: list[str] = []

    def reachable(urls: list[str]) -> list[str]:
        keep = [u for u in urls if u.startswith(("http://", "https://"))]
        skipped.extend(u for u in urls if u not in keep)
        return keep

    index = reachable(shlex.split(get("index-url") or ""))
    extras = reachable(shlex.split(get("extra-index-url") or ""))
    skipped.extend(shlex.split(get("find-links") or ""))
    cert = next(
        (c for c in (get("cert"), env.get("SSL_CERT_FILE"), env.get("REQUESTS_CA_BUNDLE")) if c and Path(c).is_file()),
        None,
    )
    return PipSettings(
        index_url=index[0] if index else None,
        extra_index_urls=tuple(extras),
        trusted_hosts=tuple(shlex.split(get("trusted-host") or "")),
        cert=Path(cert) if cert else None,
        skipped=tuple(skipped),
    )
