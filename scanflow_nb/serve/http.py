"""The HTTP face of a PredictionService: MLflow's scoring routes plus /version and /stats (FastAPI, as MLflow).

No `from __future__ import annotations` here: FastAPI reads the route signatures' annotations at run time.
"""

import asyncio

from .service import VERSION_HEADER, PredictionService


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
        return JSONResponse({"status": "ok", "version": service.model.version, "tracker": service.stats()["tracker"]})

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
        headers = {VERSION_HEADER: str(reply.model.version or "")}
        return Response(reply.content, status_code=reply.status, media_type=reply.mimetype, headers=headers)

    return app
