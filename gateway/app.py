"""The FastAPI application: routes, error envelope, request ids; the lifespan starts and stops
the model workers and the policy reloader."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.api.admin import router as admin_router
from gateway.api.audit import router as audit_router
from gateway.api.console import router as console_router
from gateway.api.errors import install_error_handlers
from gateway.api.explanations import router as explanations_router
from gateway.api.metrics import router as metrics_router
from gateway.api.middleware import RequestIdMiddleware
from gateway.api.routes import router
from gateway.runtime import Runtime


def create_app(runtime: Runtime) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="llmos",
        summary="OpenAI-compatible gateway to sandboxed local models, with policy and audit.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.pipeline = runtime.pipeline
    app.state.limits = runtime.limits
    app.state.policy_reloader = runtime.reloader  # digest, reloads, failures, last_error
    app.state.model_pool = runtime.pool  # /admin/models
    app.state.metrics_endpoint = runtime.config.metrics.endpoint  # /metrics on this port
    app.state.console = runtime.config.console  # /console
    app.state.oidc_issuers = tuple(runtime.config.oidc.issuers)  # its sign-in's provider
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(admin_router)
    app.include_router(audit_router)
    app.include_router(explanations_router)
    app.include_router(metrics_router)
    app.include_router(console_router)
    app.add_middleware(RequestIdMiddleware)
    return app
