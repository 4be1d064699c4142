"""Container figures, measured in one run on one workflow (three executors, one with requirements):

1. cold build of every executor image (no layer cache);
2. rebuild with nothing changed (goal: < 1 s per executor, nothing rebuilt);
3. rebuild after a code-only change (goal: < 5 s per executor, dependency layer reused);
4. the same workflow run on the docker back end versus the local one.

Run: python bench/docker.py   (needs a Docker engine and the base image: bash .ci/docker.sh)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# This file is named docker.py: keep its folder off sys.path so `import docker` finds the SDK.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from scanflow_nb import App, Executor, Workflow  # noqa: E402
from scanflow_nb.containers.base import DEFAULT_BASE_TAG  # noqa: E402
from scanflow_nb.containers.images import ImageBuilder  # noqa: E402
from scanflow_nb.run.docker import DockerBackend  # noqa: E402

SCRIPT = """\
import argparse, pathlib, mlflow
p = argparse.ArgumentParser(); p.add_argument("--n", type=int, default=1); a = p.parse_args()
mlflow.log_metric("n", a.n)
pathlib.Path("out").mkdir(exist_ok=True); pathlib.Path("out/{name}.txt").write_text(str(a.n))
print("{name}", a.n)  # version {version}
"""


def write_scripts(app_dir: Path, version: int) -> None:
    for name in ("prepare", "train", "evaluate"):
        (app_dir / "bench" / f"{name}.py").write_text(SCRIPT.format(name=name, version=version))


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> int:
    base = os.environ.get("SCANFLOW_BASE_IMAGE", DEFAULT_BASE_TAG)
    app_dir = Path(tempfile.mkdtemp(prefix="scanflow-bench-")) / "app"
    (app_dir / "bench").mkdir(parents=True)
    write_scripts(app_dir, version=int(time.time()))
    executors = [
        Executor("prepare", file="bench/prepare.py"),
        Executor("train", file="bench/train.py", requirements=["six"], parameters={"n": 3}),
        Executor("evaluate", file="bench/evaluate.py"),
    ]
    wf = Workflow("bench", executors=executors)
    app = App(app_dir)
    app.add(wf)
    print(f"base image {base}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at start")

    def build_all(builder):
        return [timed(lambda ex=ex: builder.executor_image(app_dir, "bench", ex))[0] for ex in executors]

    # A base no layer was ever built on (the base plus a unique label) makes the first build truly cold,
    # while keeping one consistent layer cache for the rebuilds that follow.
    import io

    from scanflow_nb.containers.docker_client import client

    fresh = f"scanflow/bench-base:{int(time.time())}"
    client().images.build(
        fileobj=io.BytesIO(f"FROM {base}\nLABEL scanflow.bench={fresh}\n".encode()), tag=fresh, rm=True
    )
    lines: list[str] = []
    cold = build_all(ImageBuilder(fresh, echo=lines.append))
    print(f"cold build:            {sum(cold):6.1f} s total, per executor " + ", ".join(f"{t:.1f}" for t in cold))
    lines.clear()
    warm = build_all(ImageBuilder(fresh, echo=lines.append))
    rebuilt = sum("building" in line for line in lines)
    print(
        f"rebuild, no change:    {sum(warm):6.2f} s total, max {max(warm):.2f} s per executor "
        f"(goal < 1 s), {rebuilt} rebuilt: " + ", ".join(f"{t:.2f}" for t in warm)
    )
    write_scripts(app_dir, version=int(time.time()) + 1)
    lines.clear()
    code = build_all(ImageBuilder(fresh, echo=lines.append))
    cached = sum("Using cache" in line for line in lines)
    print(
        f"rebuild, code change:  {sum(code):6.2f} s total, max {max(code):.2f} s per executor "
        f"(goal < 5 s), {cached} cached layers reused: " + ", ".join(f"{t:.2f}" for t in code)
    )
    # The runs use the usual base, whose tracker image exists (a tracker build is a one-off, not a run cost).
    local, r1 = timed(lambda: app.run("bench", "local", force=True, echo=False))
    docker, r2 = timed(lambda: app.run("bench", DockerBackend(base, echo=lambda line: None), force=True, echo=False))
    assert r1.ok and r2.ok, (r1.summary(), r2.summary())
    print(f"run on local:          {local:6.1f} s")
    print(
        f"run on docker:         {docker:6.1f} s  ({docker / local:.1f}x local; includes starting the "
        "tracker container and a network)"
    )
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    for image in client().images.list(filters={"label": "scanflow.image"}):
        if any(t.startswith("scanflow/bench-") for t in image.tags):
            client().images.remove(image.id, force=True)
    client().images.remove(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
