"""The HTTP face of a PredictionService: MLflow's scoring routes plus /version and /stats (FastAPI), and
`serve()`, which runs it with uvicorn as `mlflow models serve` does and flushes on a clean stop.

No `from __future__ import annotations` here: FastAPI reads the route signatures' annotations at run time.
"""

import asyncio
import os
import signal
import socket
import threading
from typing import Any

from ..errors import ScanflowError, ValidationError
from ..track import tether
from .service import CLIENT_ENV, DEFAULT_HOST, DEFAULT_PORT, REPLICA_HEADER, VERSION_HEADER, PredictionService


def asgi_app(service: PredictionService):
    """The service's HTTP interface (FastAPI, as MLflow's scoring server); closing it closes the service."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

    timeout = MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get()

    @asynccontextmanager
    async def lifespan(app):
        yield
        await asyncio.to_thread(service.close)  # uvicorn has stopped taking requests: flush

    app = FastAPI(title=f"scanflow serve {service.name}", lifespan=lifespan)

    async def health():
        stats = service.stats()
        keys = ("tracker", "logger", "spool_rows", "last_error")
        return JSONResponse({"status": "ok", "version": service.model.version, **{k: stats[k] for k in keys}})

    app.get("/health")(health)
    app.get("/ping")(health)

    @app.get("/version")
    async def version():
        return JSONResponse(service.version())

    @app.get("/stats")
    async def stats():
        return JSONResponse(service.stats())

    @app.post("/invocations")
    async def invocations(request: Request):
        body = await request.body()
        try:
            reply = await asyncio.wait_for(
                asyncio.to_thread(service.answer, body, request.headers.get("content-type")), timeout
            )
        except TimeoutError:
            return Response("Request processing time exceeded limit", status_code=504, media_type="application/json")
        service.journal(reply)
        headers = {VERSION_HEADER: str(reply.model.version or ""), REPLICA_HEADER: service.spool.replica}
        return Response(reply.content, status_code=reply.status, media_type=reply.mimetype, headers=headers)

    return app


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ScanflowError(f"cannot listen on {host}:{port} ({exc.strerror}): choose another --port") from None


def serve(
    model_uri: str,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    access_log: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Serve `model_uri` on host:port until SIGTERM or Ctrl-C, then flush; returns the final stats.

    `options`: the other settings of PredictionService (name, spool_dir, batch_rows, flush_seconds,
    max_spool_mb, follow, poll_seconds, drain_seconds). The tracking URI defaults to $MLFLOW_TRACKING_URI.
    """
    import uvicorn

    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise ValidationError("give the tracking URI to log to (--tracking-uri or MLFLOW_TRACKING_URI)")
    check_port_free(host, port)
    for key, value in CLIENT_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parent = os.environ.get("MLFLOW_RUN_ID")  # set by a workflow run: the service's run nests under its executor's
    settings = {"host": host, "port": port}
    service = PredictionService(model_uri, tracking_uri, experiment, params=settings, parent_run_id=parent, **options)
    service.start()
    config = uvicorn.Config(
        asgi_app(service),
        host=host,
        port=port,
        log_level="warning",
        access_log=access_log,
        timeout_graceful_shutdown=10,
    )
    print(
        f"serving {model_uri} ({service.model.label}) as {service.name!r} on http://{host}:{port}; "
        f"logging to experiment {service.experiment!r} at {tracking_uri}; spool {service.spool.dir}",
        flush=True,
    )
    # uvicorn re-raises the signal that stopped it once it is done: let that reach a handler that only notes it,
    # so the flush below and the caller's last words happen (the handlers before serving come back after)
    quiet = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)} if quiet else {}
    server = uvicorn.Server(config)
    tether.follow(lambda: setattr(server, "should_exit", True))  # started by a kernel: stop if it dies
    try:
        server.run()
    finally:
        final = service.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return final
