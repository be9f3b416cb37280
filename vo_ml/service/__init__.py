"""The Flask application: IVOA TAP with latent-space similarity in ADQL.

``create_app`` is a factory, as in the Flask tutorial: nothing exists at import time, ``vo-ml
serve`` and the tests each build their own app. Configuration comes, in order, from the defaults
below, a TOML file named by ``VO_ML_CONFIG``, environment variables prefixed ``VO_ML_``, and the
mapping given to the factory.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass

import faiss
from flask import Flask, Response, current_app, request

from vo_ml.archive.duckdb_backend import DuckDBBackend
from vo_ml.archive.tap_schema import TapSchema

__all__ = ["create_app", "archive", "base_url"]

DEFAULTS = {
    "ARCHIVE_DB": "vo_ml.duckdb",
    "TAP_MAXREC_DEFAULT": 20000,
    "TAP_MAXREC_LIMIT": 1000000,
    "SERVICE_BASE_URL": None,
    "SERVICE_TITLE": "vo_ml latent-similarity TAP service",
    #: The table SSA searches; None means the first published table with ObsCore columns.
    "SSA_TABLE": None,
    #: Seconds a synchronous query may run before it is stopped, so none holds a worker forever.
    "QUERY_TIMEOUT": 60.0,
    #: Largest table a query may upload (TAP UPLOAD), in bytes.
    "UPLOAD_LIMIT_BYTES": 16 * 1024 * 1024,
    #: Where async jobs and their results are kept; None means ``<ARCHIVE_DB>.jobs`` beside it.
    "JOBS_DIR": None,
    #: Async jobs executing at once (over all service processes); more wait in QUEUED.
    "ASYNC_MAX_RUNNING": 2,
    #: Seconds an async job may execute unless it asks for less, and the most it may ask for.
    "ASYNC_EXECUTION_DURATION": 600,
    "ASYNC_MAX_EXECUTION_DURATION": 3600,
    #: Days an async job and its result are kept unless it asks for less, and the most.
    "ASYNC_RETENTION_DAYS": 7,
    "ASYNC_MAX_RETENTION_DAYS": 30,
    #: Longest blocking WAIT on a job, in seconds.
    "ASYNC_MAX_WAIT": 60,
    #: Seconds between sweeps for expired jobs and jobs of processes that died.
    "ASYNC_SWEEP_SECONDS": 30.0,
    #: Where ml_encode looks for the model of a table (``<MODELS_DIR>/<model id>``) before the
    #: folder it was embedded from; set it when the archive was moved from where it was built.
    "MODELS_DIR": None,
}

#: CORS: browser clients on other sites (Aladin Lite, web notebooks) may read every answer.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization",
    "Access-Control-Expose-Headers": "Location, Content-Disposition",
}


@dataclass
class Archive:
    """The open archive and its published TAP_SCHEMA, shared by every request of the app."""

    backend: DuckDBBackend
    schema: TapSchema


def create_app(config: dict | None = None) -> Flask:
    """Build the service for the archive named by ``ARCHIVE_DB``; fail early if it is missing."""
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    if os.environ.get("VO_ML_CONFIG"):
        app.config.from_file(os.environ["VO_ML_CONFIG"], load=tomllib.load, text=False)
    app.config.from_prefixed_env("VO_ML")
    if config:
        app.config.from_mapping(config)

    # One neighbour search is far too small for OpenMP's spinning worker threads, which only
    # fight with the other requests for the cores: every search runs on its request's thread.
    faiss.omp_set_num_threads(1)
    backend = DuckDBBackend(app.config["ARCHIVE_DB"], read_only=True)
    app.extensions["vo_ml"] = Archive(backend, backend.read_tap_schema())

    from vo_ml.service import examples, ssa, tap, uws, vosi
    from vo_ml.service.dal import install_error_handlers

    install_error_handlers(app)
    app.register_blueprint(examples.bp)
    app.register_blueprint(tap.bp)
    app.register_blueprint(uws.bp)
    uws.start_jobs(app)
    app.register_blueprint(vosi.bp)
    app.register_blueprint(ssa.bp)
    app.after_request(_allow_cross_origin)
    return app


def _allow_cross_origin(response: Response) -> Response:
    response.headers.update(CORS_HEADERS)
    return response


def archive() -> Archive:
    """The archive of the app handling the current request."""
    return current_app.extensions["vo_ml"]


def base_url() -> str:
    """The service's public root URL: configured behind a proxy, else the one asked for."""
    configured = current_app.config.get("SERVICE_BASE_URL")
    return (configured or request.host_url).rstrip("/")
