"""The images the container tests use, built once per machine and reused by tag: the registry-free base
image (debootstrap + docker import; needs root) and the tracker image on it."""

import os
import shutil
import sys
import time

from scanflow_nb.containers.base import DEFAULT_BASE_TAG, base_image_exists, build_base_image
from scanflow_nb.containers.images import ImageBuilder

start = time.monotonic()
if not base_image_exists(DEFAULT_BASE_TAG) and (os.geteuid() != 0 or not shutil.which("debootstrap")):
    print(f"images: {DEFAULT_BASE_TAG} is missing and needs root and debootstrap to build: container tests skip")
    sys.exit(0)
build_base_image(
    DEFAULT_BASE_TAG, echo=lambda line: print("images:", line) if "ready" in line or "exists" in line else None
)
print("images: tracker image", ImageBuilder(DEFAULT_BASE_TAG, echo=lambda line: None).tracker_image())
print(f"images: ready after {time.monotonic() - start:.0f} s")
