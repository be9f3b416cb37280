"""The service's settings: one typed object, checked once when the app is built.

Flask merges the configuration (the defaults here, a TOML file named by ``VO_ML_CONFIG``,
``VO_ML_*`` environment variables, the mapping given to ``create_app``); :meth:`Settings.from_config`
turns the merged mapping into numbers and paths once, so a bad value stops the service at start
with the key at fault named, instead of failing the first request that reads it. Each field is
the lower-cased name of its configuration key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping

from flask import current_app

__all__ = ["Settings", "SettingsError", "DEFAULTS", "settings"]


#: SSA 1.1's words for where spectra come from (the SimpleDALRegExt ``dataSource``).
SSA_DATA_SOURCES = ("survey", "pointed", "custom", "theory", "artificial")


class SettingsError(ValueError):
    """A configuration value the service cannot run with; the message names its key."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting of the service, typed; numbers are positive."""

    archive_db: str = "vo_ml.duckdb"
    #: MAXREC when a request gives none, and the most a request may ask for.
    tap_maxrec_default: int = 20000
    tap_maxrec_limit: int = 1000000
    #: The public root URL behind a proxy; None means the URL each request was sent to.
    service_base_url: str | None = None
    service_title: str = "vo_ml latent-similarity TAP service"
    #: The table SSA searches; None means the first published table with ObsCore columns.
    ssa_table: str | None = None
    #: Seconds a synchronous query may run before it is stopped, so none holds a worker forever.
    query_timeout: float = 60.0
    #: Largest table a query may upload (TAP UPLOAD), in bytes.
    upload_limit_bytes: int = 16 * 1024 * 1024
    #: Where async jobs and their results are kept; None means ``<ARCHIVE_DB>.jobs`` beside it.
    jobs_dir: str | None = None
    #: Async jobs executing at once (over all service processes); more wait in QUEUED.
    async_max_running: int = 2
    #: Seconds an async job may execute unless it asks for less, and the most it may ask for.
    async_execution_duration: int = 600
    async_max_execution_duration: int = 3600
    #: Days an async job and its result are kept unless it asks for less, and the most.
    async_retention_days: float = 7
    async_max_retention_days: float = 30
    #: Longest blocking WAIT on a job, in seconds.
    async_max_wait: float = 60
    #: Seconds between sweeps for expired jobs and jobs of processes that died.
    async_sweep_seconds: float = 30.0
    #: Where ml_encode looks for the model of a table (``<MODELS_DIR>/<model id>``) before the
    #: folder it was embedded from; set it when the archive was moved from where it was built.
    models_dir: str | None = None
    #: A spectrum uploaded for ml_encode that covers less than this share of the model's
    #: wavelength grid, or whose typicality (percent) is below ML_MIN_TYPICALITY, is named in a
    #: warning INFO of the result: its neighbours are uncertain.
    ml_min_coverage: float = 0.3
    ml_min_typicality: float = 1.0
    #: Where SSA's spectra come from, in SSA's words (survey, pointed, custom, theory or
    #: artificial); declared in the SSA capability.
    ssa_data_source: str = "pointed"
    #: The TOML file of what the registry records say of the service and its publisher
    #: (:mod:`vo_ml.service.registry`); None means ``<ARCHIVE_DB>.registry.toml`` if it exists.
    registry_config: str | None = None
    #: Records in one page of an OAI-PMH list; a resumption token asks for the next.
    oai_page_size: int = 100

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> Settings:
        """The settings of a merged Flask config; :class:`SettingsError` names a bad key."""
        kinds = typing.get_type_hints(cls)
        values = {field.name: _converted(field.name.upper(), config.get(field.name.upper(),
                                                                        field.default),
                                         kinds[field.name])
                  for field in dataclasses.fields(cls)}
        settings = cls(**values)
        for default, hard in (("TAP_MAXREC_DEFAULT", "TAP_MAXREC_LIMIT"),
                              ("ASYNC_EXECUTION_DURATION", "ASYNC_MAX_EXECUTION_DURATION"),
                              ("ASYNC_RETENTION_DAYS", "ASYNC_MAX_RETENTION_DAYS")):
            if getattr(settings, default.lower()) > getattr(settings, hard.lower()):
                raise SettingsError(f"setting {default}={getattr(settings, default.lower())} is "
                                    f"more than {hard}={getattr(settings, hard.lower())}: the "
                                    "default must be within the limit")
        for key, most in (("ML_MIN_COVERAGE", 1), ("ML_MIN_TYPICALITY", 100)):
            if getattr(settings, key.lower()) > most:
                raise SettingsError(f"setting {key}={getattr(settings, key.lower())} is more "
                                    f"than {most}, the most it can be: set VO_ML_{key} (or {key} "
                                    "in the VO_ML_CONFIG file) to one within it")
        if settings.ssa_data_source not in SSA_DATA_SOURCES:
            raise SettingsError(f"setting SSA_DATA_SOURCE={settings.ssa_data_source!r} is not one "
                                f"of SSA's words {', '.join(SSA_DATA_SOURCES)}: set "
                                "VO_ML_SSA_DATA_SOURCE (or SSA_DATA_SOURCE in the VO_ML_CONFIG "
                                "file) to the one that says where the spectra come from")
        return settings

    @property
    def registry_file(self) -> str:
        """The registry's TOML file: ``REGISTRY_CONFIG``, or beside the archive."""
        return self.registry_config or f"{self.archive_db}.registry.toml"

    @property
    def jobs_folder(self) -> str:
        """Where async jobs are kept: ``JOBS_DIR``, or beside the archive."""
        return self.jobs_dir or f"{self.archive_db}.jobs"


#: The configuration keys and their defaults, as Flask's config holds them.
DEFAULTS = {field.name.upper(): field.default for field in dataclasses.fields(Settings)}


def _converted(key: str, value: object, kind: object) -> object:
    """``value`` as ``kind`` (int, float, str, or one of them or None)."""
    optional = isinstance(kind, types.UnionType) and type(None) in kind.__args__
    if value is None or value == "":
        if optional:
            return None
        raise SettingsError(f"setting {key} is empty: give it a value (VO_ML_{key} in the "
                            "environment, or in the VO_ML_CONFIG file)")
    base = next(k for k in kind.__args__ if k is not type(None)) if optional else kind
    if base is str:
        return str(value)
    try:
        number = float(value) if not isinstance(value, bool) else None
        converted = base(number) if number is not None and (base is float or number.is_integer()) \
            else None
    except (TypeError, ValueError):
        converted = None
    if converted is None or not converted > 0 or math.isinf(converted):
        unit = "a whole number" if base is int else "a number"
        raise SettingsError(f"setting {key}={value!r} is not {unit} above 0: set VO_ML_{key} (or "
                            f"{key} in the VO_ML_CONFIG file) to one")
    return converted


def settings() -> Settings:
    """The settings of the app handling the current request."""
    return current_app.extensions["vo_ml_settings"]
