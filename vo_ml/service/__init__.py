"""The Flask application: IVOA TAP with latent-space similarity in ADQL.

``create_app`` is a factory, as in the Flask tutorial: nothing exists at import time, ``vo-ml
serve`` and the tests each build their own app. Configuration comes, in order, from the defaults
of :class:`~vo_ml.service.settings.Settings`, a TOML file named by ``VO_ML_CONFIG``, environment
variables prefixed ``VO_ML_``, and the mapping given to the factory; it is checked once, into the
app's settings, before anything else is built.
"""

from __future__ import annotations

import os
import tomllib

import faiss
from flask import Flask, Response

from vo_ml.archive.backends import open_backend
from vo_ml.service.access_log import AccessLog
from vo_ml.service.context import Archive
from vo_ml.service.settings import DEFAULTS, Settings

__all__ = ["create_app"]

#: CORS: browser clients on other sites (Aladin Lite, web notebooks) may read every answer.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization",
    "Access-Control-Expose-Headers": "Location, Content-Disposition",
}


def create_app(config: dict | None = None) -> Flask:
    """Build the service for the archive named by ``ARCHIVE_DB``; fail early if it is missing."""
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    if os.environ.get("VO_ML_CONFIG"):
        app.config.from_file(os.environ["VO_ML_CONFIG"], load=tomllib.load, text=False)
    app.config.from_prefixed_env("VO_ML")
    if config:
        app.config.from_mapping(config)
    app.extensions["vo_ml_settings"] = settings = Settings.from_config(app.config)

    # One neighbour search is far too small for OpenMP's spinning worker threads, which only
    # fight with the other requests for the cores: every search runs on its request's thread.
    faiss.omp_set_num_threads(1)
    backend = open_backend(settings.archive_db, read_only=True)
    app.extensions["vo_ml"] = Archive(backend, backend.read_tap_schema())

    from vo_ml.service import datalink, examples, explore, explore_place, oai, registry, ssa, tap, uws, vosi
    from vo_ml.service.dal import install_error_handlers

    install_error_handlers(app)
    app.register_blueprint(examples.bp)
    app.register_blueprint(tap.bp)
    app.register_blueprint(uws.bp)
    uws.start_jobs(app, settings)
    app.register_blueprint(vosi.bp)
    app.register_blueprint(ssa.bp)
    app.register_blueprint(datalink.bp)
    app.register_blueprint(explore.bp)
    app.register_blueprint(explore_place.bp)
    app.register_blueprint(oai.bp)
    registry.install(app)
    app.after_request(_allow_cross_origin)
    app.wsgi_app = AccessLog(app.wsgi_app)
    return app


def _allow_cross_origin(response: Response) -> Response:
    response.headers.update(CORS_HEADERS)
    return response
