"""Fetch spectra from any IVOA SSA service into a local cache, for ingest or for a quick look.

The cache is a plain folder: one file per spectrum, named from its publisher DID (or title when
the service gives no DID) plus a hash of that identifier, so names are safe on every file system
and two spectra never share one. A file present under its name is complete, because downloads
are written to a temporary file and renamed into place only once finished; a re-run therefore
downloads only what is missing, and a run killed mid-download leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import requests
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.time import Time
from pyvo.dal import SSAService
from pyvo.dal.ssa import SSARecord

from vo_ml.files import replacing

__all__ = ["fetch_ssa", "cache_name"]

#: Seconds a request to the service may go without an answer (connecting, or between bytes).
TIMEOUT = 120
CHUNK_BYTES = 1 << 20
#: Utypes naming a record's dataset identifier, most specific first.
DID_UTYPES = ("ssa:Curation.PublisherDID", "ssa:DataID.CreatorDID", "ssa:DataID.DatasetID")
MAX_STEM = 80


def fetch_ssa(
    url: str, cache_dir: Path, *, pos: SkyCoord | tuple[float, float] | None = None,
    size: u.Quantity | float | None = None, band: u.Quantity | tuple[float, float] | None = None,
    time: Time | tuple[str, str] | None = None, target: str | None = None, maxrec: int | None = None,
    timeout: float = TIMEOUT,
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Search the SSA service at ``url`` and make sure every spectrum found is in ``cache_dir``.

    The constraints are pyvo's: ``pos`` and ``size`` (cone diameter, degrees if a float),
    ``band`` (metres if floats), ``time`` (ISO 8601 if strings); ``target`` is TARGETNAME.
    Returns the cached file of every record, downloaded now or before, and (URL, reason) for each
    record whose file could not be fetched: one failure does not stop the others. A failed search
    raises one of pyvo's DALAccessError, as there is nothing to fetch; so does a search the
    service leaves unanswered for ``timeout`` seconds (a silent download is a failed record).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    keywords = {name: value for name, value in (("TARGETNAME", target), ("MAXREC", maxrec))
                if value is not None}
    paths: list[Path] = []
    failures: list[tuple[str, str]] = []
    with _TimeoutSession(timeout) as session:
        records = SSAService(url, session=session).search(pos=pos, diameter=size, band=band,
                                                          time=time, **keywords)
        for record in records:
            data_url = record.getdataurl()
            if not data_url:
                failures.append((url, f"record {record.title!r} has no access reference"))
                continue
            path = cache_dir / cache_name(record)
            try:
                if not path.exists():
                    _download(session, data_url, path)
            except (requests.RequestException, OSError) as error:
                failures.append((data_url, str(error)))
                continue
            paths.append(path)
    return paths, failures


def cache_name(record: SSARecord) -> str:
    """A file name for the record's spectrum: readable stem, hash of the identifier, extension."""
    identifier = _identifier(record)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", re.sub(r"^[a-z]+://", "", identifier)).strip("._")
    digest = hashlib.sha256(identifier.encode()).hexdigest()[:10]
    extension = record.suggest_extension(default="dat")
    return f"{stem[-MAX_STEM:] or 'spectrum'}-{digest}.{extension}"


def _identifier(record: SSARecord) -> str:
    for utype in DID_UTYPES:
        value = record.getbyutype(utype, decode=True)
        if value:
            return str(value)
    return str(record.title or record.getdataurl())


class _TimeoutSession(requests.Session):
    """A session whose requests give up after ``timeout`` seconds without an answer: pyvo's
    search sets no timeout, so a service that stops answering would hang the caller forever."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, *arguments, **options) -> requests.Response:
        return super().request(*arguments, **{"timeout": self.timeout, **options})


def _download(session: requests.Session, url: str, path: Path) -> None:
    """Write ``url`` to ``path`` through a temporary file beside it, renamed only when complete."""
    with session.get(url, stream=True) as response:
        response.raise_for_status()
        with replacing(path) as new, open(new.path, "wb") as sink:
            for chunk in response.iter_content(CHUNK_BYTES):
                sink.write(chunk)
