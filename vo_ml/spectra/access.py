"""How a client gets a spectrum's file: its MIME type, and its access URL relative to the service.

Ingest stores both in every row (ObsCore ``access_format`` and ``access_url``). The URL is the
service's ``/ssa/data`` route for the row's publisher DID, stored relative to the service root:
the public URL of the service is known only once it serves (from ``SERVICE_BASE_URL`` or the
request), and may change when the archive moves. The service puts its base URL in front of
each relative access URL it sends (:mod:`vo_ml.service.access`), as DaCHS substitutes its
server URL into product URLs.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

__all__ = ["FITS_MIME", "VOTABLE_MIME", "UNKNOWN_MIME", "FILE_FORMATS", "file_format",
           "DATA_ROUTE", "relative_access_url"]

FITS_MIME = "application/fits"
VOTABLE_MIME = "application/x-votable+xml"
UNKNOWN_MIME = "application/octet-stream"
#: The MIME type of a spectrum file, from the end of its name; /ssa/data serves it as that type.
FILE_FORMATS = ((".fits", FITS_MIME), (".fit", FITS_MIME), (".fts", FITS_MIME),
                (".xml", VOTABLE_MIME), (".vot", VOTABLE_MIME))
#: The service's route that hands out the file of a publisher DID (``?ID=<DID>``).
DATA_ROUTE = "/ssa/data"


def file_format(path: str | Path) -> str:
    """The MIME type a spectrum file is published and served as, from its name."""
    lowered = str(path).lower()
    return next((mime for suffix, mime in FILE_FORMATS if lowered.endswith(suffix)), UNKNOWN_MIME)


def relative_access_url(did: str) -> str:
    """The access URL of the spectrum ``did``, relative to the service root: ``/ssa/data?ID=``
    and the DID percent-encoded (every character but letters, digits and ``-._~``)."""
    return f"{DATA_ROUTE}?ID={quote(did, safe='')}"
