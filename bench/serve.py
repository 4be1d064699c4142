"""Serving benchmark: `scanflow serve` (every row logged) against `mlflow models serve`, and its promises under stress.

One run prints, with the load average:
1. throughput (rows/s) and p50/p99 latency of both servers on the same model and the same load (C clients on
   keep-alive connections, R rows per request), in alternating rounds, and the ratios (goal: >= 0.9x
   throughput, <= 1.2x p99); then that every answered row of scanflow's rounds reached MLflow;
2. 10,000 requests with the tracker (`mlflow server`) killed after 3,000 and restarted after 6,000: rows logged
   must equal rows answered 200;
3. the champion alias moved under load: failed requests (goal 0) and the delay until the new version answers
   (goal < 5 s);
4. on the swarm (`--swarm`, needs Docker in swarm mode): 2 replicas behind the routing mesh, both answering;
   one replica's container killed under load is replaced, and no answered row is missing from MLflow.

    python bench/serve.py                # parts 1-3, about 5 minutes on an idle machine
    python bench/serve.py --quick        # shorter rounds and 2,000 requests in part 2
    python bench/serve.py --swarm        # and part 4 (builds the service's image the first time)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

# bench/docker.py would shadow the docker SDK (part 4 and the swarm back end import it): keep this folder off sys.path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import numpy as np  # noqa: E402

from scanflow_nb.serve import start_service  # noqa: E402
from scanflow_nb.serve.process import get_json  # noqa: E402
from scanflow_nb.track import TrackerServer, get_client  # noqa: E402
from scanflow_nb.track.server import free_port  # noqa: E402

MODEL = "digits"


class Load:
    """`clients` threads posting `rows` digits per request on keep-alive connections until stopped or `total`."""

    def __init__(self, port: int, X: np.ndarray, clients: int, rows: int, total: int | None = None):
        self.port, self.clients, self.total = port, clients, total
        rng = np.random.default_rng(0)
        self.bodies = [json.dumps({"inputs": X[rng.choice(len(X), rows)].tolist()}).encode() for _ in range(256)]
        self.rows = rows
        self.latencies: list[float] = []
        self.statuses: Counter = Counter()
        self.versions: list[tuple[float, str]] = []  # (time, version header) of each 200
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def _next(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or (self.total is not None and self.sent >= self.total):
                return None
            self.sent += 1
            return self.sent

    def _client(self, index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": "application/json"}
        while (n := self._next()) is not None:
            body = self.bodies[(n * 7 + index) % len(self.bodies)]
            start = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body, headers)
                reply = conn.getresponse()
                reply.read()
                status, version = reply.status, reply.getheader("X-Scanflow-Model-Version", "")
            except (OSError, http.client.HTTPException):
                status, version = "error", ""
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            elapsed = time.perf_counter() - start
            with self._lock:
                self.statuses[status] += 1
                if status == 200:
                    self.latencies.append(elapsed)
                    self.versions.append((time.time(), version))
        conn.close()

    def start(self) -> Load:
        self.started = time.perf_counter()
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> Load:
        self._stop.set()
        return self.join()

    def join(self) -> Load:
        for t in self._threads:
            t.join()
        self.elapsed = time.perf_counter() - self.started
        return self

    @property
    def ok_rows(self) -> int:
        return self.statuses[200] * self.rows

    def summary(self) -> dict[str, float]:
        lat = sorted(self.latencies)
        return {
            "rows_s": self.ok_rows / self.elapsed,
            "p50_ms": 1000 * lat[len(lat) // 2],
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "failed": sum(v for k, v in self.statuses.items() if k != 200),
        }


def service_batches(tracking_uri: str, experiment: str, service: str) -> list:
    """The complete inference batches a service logged."""
    client = get_client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs, token = [], None
    while True:
        page = client.search_runs(
            [exp.experiment_id],
            f"tags.`scanflow.serve.service` = '{service}' and tags.`scanflow.batch` = 'true'",
            max_results=1000,
            page_token=token,
        )
        runs += page
        token = page.token
        if not token:
            return runs


def logged_rows(tracking_uri: str, experiment: str, service: str) -> int:
    """Rows in the inference batches the service logged (their `scanflow.rows` tags)."""
    return sum(int(r.data.tags["scanflow.rows"]) for r in service_batches(tracking_uri, experiment, service))


def register(tracking_uri: str, X, y) -> None:
    """v1 on 500 digits (the champion) and v2 on 1,000 (registered, not promoted)."""
    from sklearn.linear_model import LogisticRegression

    from scanflow_nb.plan import ModelPlanner

    planner = ModelPlanner(tracking_uri, MODEL, experiment="planner")
    for n in (500, 1000):
        planner.register(LogisticRegression(max_iter=300).fit(X[:n], y[:n]))
    get_client(tracking_uri).set_registered_model_alias(MODEL, "champion", "1")


def wait_http(port: int, path: str = "/health", timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"nothing answered on port {port} within {timeout} s")


def side_by_side(tracker: str, X, args) -> None:
    print(
        f"\n1. throughput and latency: {args.clients} clients x {args.rows} rows per request, "
        f"{args.rounds} alternating rounds of {args.seconds:g} s each"
    )
    mlflow_port = free_port()
    mlflow = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{MODEL}/1",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(mlflow_port),
        ],
        env={**os.environ, "MLFLOW_TRACKING_URI": tracker},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    service = start_service(
        f"models:/{MODEL}@champion", tracker, "bench", name="speed", batch_rows=1000, flush_seconds=5
    )
    try:
        wait_http(mlflow_port, "/ping")
        results: dict[str, list[dict]] = {"mlflow models serve": [], "scanflow serve": []}
        Load(mlflow_port, X, args.clients, args.rows).start().stop()  # warm both up
        Load(service.port, X, args.clients, args.rows).start().stop()
        answered = 0
        for _ in range(args.rounds):
            for name, port in (("mlflow models serve", mlflow_port), ("scanflow serve", service.port)):
                load = Load(port, X, args.clients, args.rows).start()
                time.sleep(args.seconds)
                load.stop()
                results[name].append(load.summary())
                if name == "scanflow serve":
                    answered += load.ok_rows
        med = {
            name: {k: statistics.median(r[k] for r in rounds) for k in rounds[0]} for name, rounds in results.items()
        }
        for name, m in med.items():
            rounds = ", ".join(str(round(r["rows_s"])) for r in results[name])
            print(
                f"   {name:<22} {m['rows_s']:8.0f} rows/s   p50 {m['p50_ms']:6.1f} ms   p99 {m['p99_ms']:6.1f} ms"
                f"   failed {m['failed']:.0f}   (rows/s per round: {rounds})"
            )
        ours, theirs = med["scanflow serve"], med["mlflow models serve"]
        print(
            f"   ratio scanflow/mlflow: throughput {ours['rows_s'] / theirs['rows_s']:.2f}x (goal >= 0.9), "
            f"p99 {ours['p99_ms'] / theirs['p99_ms']:.2f}x (goal <= 1.2)"
        )
    finally:
        os.killpg(mlflow.pid, 15)
        mlflow.wait(30)
        stats = service.stats()
        service.stop()
    total_answered = stats["rows"]
    logged = logged_rows(tracker, "bench", "speed")
    print(
        f"   scanflow logged {logged} of the {total_answered} rows it answered (warm-up included; "
        f"timed rounds: {answered})"
    )


def outage(tracker_server: TrackerServer, X, args) -> None:
    n = args.requests
    print(f"\n2. {n} requests, tracker killed after {int(n * 0.3)} and restarted after {int(n * 0.6)}")
    service = start_service(
        f"models:/{MODEL}@champion", tracker_server.uri, "bench", name="outage", batch_rows=500, flush_seconds=1
    )
    load = Load(service.port, X, args.clients, args.rows, total=n).start()
    try:
        while load.sent < n * 0.3:
            time.sleep(0.01)
        os.killpg(tracker_server.process.pid, 9)  # a crash, not a clean stop
        tracker_server.process.wait(30)
        down = time.monotonic()
        while load.sent < n * 0.6:
            time.sleep(0.01)
        spooled = service.stats()
        tracker_server.start(timeout=600)
        print(
            f"   tracker down {time.monotonic() - down:.1f} s; when it restarted {spooled['spool_rows']} rows "
            f"waited in the spool ({spooled['spool_bytes'] / 2**20:.1f} MiB), tracker {spooled['tracker']}"
        )
        load.join()
    finally:
        load.stop()
        final = service.stop()
    logged = logged_rows(tracker_server.uri, "bench", "outage")
    print(
        f"   answered 200: {load.statuses[200]} requests, {load.ok_rows} rows; failed {load.summary()['failed']}; "
        f"logged {logged} rows -> {'equal' if logged == load.ok_rows else 'MISMATCH'}"
    )
    print(f"   the service's last line: {final}")


def switch(tracker: str, X, args) -> None:
    print("\n3. the champion alias moved from v1 to v2 under load")
    service = start_service(f"models:/{MODEL}@champion", tracker, "bench", name="switch", poll_seconds=1)
    load = Load(service.port, X, args.clients, args.rows).start()
    try:
        time.sleep(args.seconds / 2)
        moved = time.time()
        get_client(tracker).set_registered_model_alias(MODEL, "champion", "2")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(v == "2" for _, v in load.versions[-50:]):
            time.sleep(0.05)
        time.sleep(args.seconds / 2)
    finally:
        load.stop()
        version = get_json(service.url + "/version")["version"]
        service.stop()
    first_new = min((t for t, v in load.versions if v == "2"), default=None)
    after = [v for t, v in load.versions if first_new and t > first_new + 0.5]
    delay = f"v2 answered {first_new - moved:.2f} s after the alias moved (goal < 5 s)" if first_new else "v2 never"
    print(f"   {sum(load.statuses.values())} requests, failed {load.summary()['failed']} (goal 0); {delay}")
    print(f"   after the switch: {after.count('2')} answers by v2, {after.count('1')} by v1; /version says v{version}")


SWARM_LOAD = """\
import collections, json, os, threading, time, urllib.request
rows = {rows}
url = os.environ["SCANFLOW_SERVICE_API"] + "/invocations"
body = json.dumps({{"inputs": rows}}).encode()
counts, by_replica = collections.Counter(), collections.Counter()
lock = threading.Lock()

def client():
    deadline = time.monotonic() + {seconds}
    while time.monotonic() < deadline:
        replica = None
        try:  # a new connection each time: round-robin DNS spreads them over the replicas
            request = urllib.request.Request(url, body, {{"Content-Type": "application/json"}})
            with urllib.request.urlopen(request, timeout=10) as reply:
                reply.read()
                replica = reply.headers["X-Scanflow-Replica"]
        except OSError:
            time.sleep(0.05)
        with lock:
            counts["answered" if replica else "failed"] += 1
            if replica:
                by_replica[replica] += 1

threads = [threading.Thread(target=client) for _ in range({clients})]
[t.start() for t in threads]
[t.join() for t in threads]
report = {{**counts, "rows": counts["answered"] * len(rows), "by_replica": dict(by_replica)}}
print("LOAD", json.dumps(report))
"""


def swarm(X, y, args) -> None:
    """Part 4: 2 replicas on the swarm; the load runs on the run's network (the kernel cannot reach both)."""
    import docker
    from sklearn.linear_model import LogisticRegression

    from scanflow_nb import App, Executor, Workflow
    from scanflow_nb.plan import ModelPlanner
    from scanflow_nb.run.swarm import SwarmBackend

    print(
        f"\n4. swarm: 2 replicas, {args.clients} clients on the run's network for {args.swarm_seconds:g} s, "
        "one replica's container killed (SIGKILL) 20 s after both answer"
    )
    rows = X[: args.rows].tolist()
    load = SWARM_LOAD.format(rows=json.dumps(rows), seconds=args.swarm_seconds, clients=args.clients)
    api = Executor(
        "api", model=f"models:/{MODEL}@champion", port=free_port(), replicas=2, parameters={"flush-seconds": 5}
    )
    app = App(Path.cwd() / "swarm_app")
    app.path.mkdir(exist_ok=True)
    app.add(Workflow("swarm", executors=[api, Executor("load", code=load, depends_on=["api"])]))
    uri = app.tracking_uri("swarm")
    planner = ModelPlanner(uri, MODEL, experiment="planner")
    planner.decide(planner.register(LogisticRegression(max_iter=300).fit(X[:500], y[:500])), X[1000:], y[1000:])
    engine, moments = docker.from_env(), {}
    mine = {"label": "scanflow.key=swarm/api"}

    def kill_one():
        time.sleep(20)
        victim = engine.containers.list(filters={**mine, "status": "running"})[0]
        victim.kill()
        moments["killed"] = time.monotonic()
        while time.monotonic() - moments["killed"] < 300:
            healthy = {c.id for c in engine.containers.list(filters={**mine, "health": "healthy"})}
            if len(healthy - {victim.id}) >= 2:
                moments["replaced"] = time.monotonic()
                return
            time.sleep(0.5)

    def on_event(event):
        if event.kind == "serving":
            threading.Thread(target=kill_one, daemon=True).start()

    result = app.run(
        "swarm", backend=SwarmBackend(echo=lambda line: None, tracker_timeout=600), echo=False, listeners=[on_event]
    )
    report = json.loads(app.logs("swarm/load").split("LOAD ", 1)[1])
    report.setdefault("failed", 0)
    logged = logged_rows(uri, "swarm", "api")
    replicas = {r.data.tags["scanflow.serve.replica"] for r in service_batches(uri, "swarm", "api")}
    replaced = f"{moments['replaced'] - moments['killed']:.1f} s" if "replaced" in moments else "not within 300 s"
    print(
        f"   run {result.status}; {report['answered']} requests answered 200 ({report['rows']} rows), "
        f"{report['failed']} failed (connections of the killed replica); the killed one was replaced and "
        f"healthy after {replaced}"
    )
    answers = ", ".join(f"{n} by {name}" for name, n in sorted(report["by_replica"].items()))
    print(f"   answers per replica: {answers}; batches logged from {len(replicas)} replicas' journals")
    verdict = "none lost" if logged >= report["rows"] else f"{report['rows'] - logged} LOST"
    print(
        f"   rows logged {logged} vs answered 200 {report['rows']}: {verdict}; {logged - report['rows']} more "
        "(answered by the model, the reply cut off by the kill)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=None, help="length of one round (default 15, quick 6)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds per server (3, quick 2)")
    parser.add_argument("--requests", type=int, default=None, help="requests of part 2 (10,000, quick 2,000)")
    parser.add_argument("--swarm", action="store_true", help="also part 4, on the swarm (needs Docker, swarm mode)")
    parser.add_argument("--swarm-seconds", type=float, default=60, help="length of part 4's load (60)")
    args = parser.parse_args()
    args.seconds = args.seconds or (6 if args.quick else 15)
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.requests = args.requests or (2000 if args.quick else 10000)
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at start")
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        server = TrackerServer(f"sqlite:///{tmp}/mlflow.db", Path(tmp) / "artifacts", log_file=Path(tmp) / "t.log")
        server.start()
        try:
            register(server.uri, X, y)
            side_by_side(server.uri, X, args)
            outage(server, X, args)
            switch(server.uri, X, args)
        finally:
            server.stop()
        if args.swarm:
            swarm(X, y, args)
    print(f"\nload average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at end")


if __name__ == "__main__":
    main()
