"""What a request handler asks of the app serving it: the open archive and the public root URL.

Kept apart from the package's ``create_app``, which imports every protocol module, so that those
modules can reach the archive without importing the factory back.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, request

from vo_ml.archive.backend import Backend
from vo_ml.archive.tap_schema import TapSchema
from vo_ml.service.settings import settings

__all__ = ["Archive", "archive", "base_url"]


@dataclass
class Archive:
    """The open archive and its published TAP_SCHEMA, shared by every request of the app."""

    backend: Backend
    schema: TapSchema


def archive() -> Archive:
    """The archive of the app handling the current request."""
    return current_app.extensions["vo_ml"]


def base_url() -> str:
    """The service's public root URL: configured behind a proxy, else the one asked for."""
    return (settings().service_base_url or request.host_url).rstrip("/")
