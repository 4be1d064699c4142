"""Names and labels for what the project creates in Docker and Kubernetes.

Workflow and executor names allow upper case and '_' (see spec.NAME_RULE); Docker image names and
Kubernetes object names do not, so they are converted here, and conversions that collide are refused.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

from ..errors import ValidationError

LABEL_APP, LABEL_RUN, LABEL_KEY, LABEL_WORKFLOW = "scanflow.app", "scanflow.run", "scanflow.key", "scanflow.workflow"
LABEL_IMAGE = "scanflow.image"  # on every image scanflow builds: what it is for ("wf/executor", "tracker")
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# Docker's reference grammar: [host[:port]/]path[:tag][@digest], path components lower case.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:localhost|[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+|[a-zA-Z0-9.-]+:[0-9]+)(?::[0-9]+)?"
_IMAGE_REF = re.compile(
    rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)


def app_id(app_dir: str | Path) -> str:
    """A short stable id of an app folder, used in labels and names."""
    return hashlib.sha256(str(Path(app_dir).resolve()).encode()).hexdigest()[:12]


def extra_labels() -> dict[str, str]:
    """Labels from $SCANFLOW_LABELS ("key=value,key=value"), put on everything scanflow creates in Docker,
    e.g. to find and remove what one CI job made."""
    import os

    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in os.environ.get("SCANFLOW_LABELS", "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"SCANFLOW_LABELS: expected key=value items separated by commas, got {item!r}")
        labels[key.strip()] = value.strip()
    return labels


def check_image_ref(ref: str, what: str = "image") -> str:
    """Return `ref` if Docker accepts it as an image reference, else raise ValidationError."""
    if not isinstance(ref, str) or not _IMAGE_REF.fullmatch(ref):
        raise ValidationError(
            f"invalid {what} name {ref!r}: Docker image names are lower case "
            "letters, digits and separators (. _ -), with an optional :tag"
        )
    return ref


def image_repository(workflow: str, executor: str) -> str:
    """The repository of an executor's generated image, e.g. `scanflow/train-fit`."""
    return check_image_ref(f"scanflow/{workflow.lower()}-{executor.lower()}", "image")


def shorten(name: str, limit: int = 63) -> str:
    """`name` cut to `limit` characters, kept unique by a hash of the whole name."""
    if len(name) <= limit:
        return name
    return name[: limit - 9].rstrip("-") + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]


def k8s_name(*parts: str) -> str:
    """A Kubernetes object name (RFC 1123 label) from name parts: lower case, '_' -> '-', <= 63 chars."""
    name = "-".join(p.lower().replace("_", "-") for p in parts if p)
    name = re.sub(r"-+", "-", name).strip("-")
    name = shorten(name)
    if not _DNS_LABEL.fullmatch(name):
        raise ValidationError(f"cannot make a Kubernetes name from {'-'.join(parts)!r}: use letters, digits and '-'")
    return name


def unique_names(keys: Iterable[str], convert) -> dict[str, str]:
    """key -> converted name; ValidationError naming both keys when two convert to the same name."""
    seen: dict[str, str] = {}
    out: dict[str, str] = {}
    for key in keys:
        name = convert(key)
        if name in seen:
            raise ValidationError(
                f"{seen[name]!r} and {key!r} both become {name!r} in Docker/Kubernetes "
                "names (lower case, '_' as '-'): rename one"
            )
        seen[name] = key
        out[key] = name
    return out
