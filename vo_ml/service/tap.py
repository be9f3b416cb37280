"""TAP 1.1 queries: ``/tap/sync``, and the query an async job runs (:func:`run_query`).

A request is parsed into DALI parameters, uploaded tables are read, the ADQL is translated
against the published TAP_SCHEMA plus the uploads (so only published tables, uploads and
declared functions are reachable), similarity references are checked, and the rows are streamed
in the format asked for. Every refusal is a DALI error document with the HTTP status DALI
gives, never a traceback.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from flask import Blueprint, Response, current_app

from vo_ml import adql
from vo_ml.archive.backend import QueryError
from vo_ml.archive.tap_schema import TapSchema
from vo_ml.service import archive, similarity
from vo_ml.service.dal import (
    Executor,
    maxrec_of,
    query_errors,
    request_parameters,
    request_part,
    respond,
)
from vo_ml.service.dali import DaliError, DaliParameters
from vo_ml.service.encoding import encode_uploads
from vo_ml.service.formats import CappedRows, output_format
from vo_ml.service.uploads import read_uploads, upload_schema, upload_specs

__all__ = ["bp", "run_query", "Answer", "LANGUAGES"]

bp = Blueprint("tap", __name__, url_prefix="/tap")

#: LANG values accepted for ADQL (TAP 1.1 section 2.3.1).
LANGUAGES = ("ADQL", "ADQL-2.0", "ADQL-2.1")

#: Reads multipart part ``name`` of the request, at most ``limit`` + 1 bytes; None if absent.
PartReader = Callable[[str, int], bytes | None]


@dataclass
class Answer:
    """A query's result on its way out: the MIME type, and the document piece by piece.

    ``failure()`` says, once the pieces are read, whether the query failed while they were
    written (the document then ends early, with an error INFO for VOTable).
    """

    mimetype: str
    chunks: Iterator[bytes]
    failure: Callable[[], QueryError | None]


@bp.route("/sync", methods=["GET", "POST"])
def sync() -> Response:
    def streamed() -> Response:
        result = run_query(request_parameters(), request_part,
                           float(current_app.config["QUERY_TIMEOUT"]))
        return Response(result.chunks, mimetype=result.mimetype)
    return respond(streamed)


def run_query(parameters: DaliParameters, part: PartReader, timeout: float,
              stop: threading.Event | None = None) -> Answer:
    """Start one TAP query given its DALI parameters; its rows are produced as they are read.

    Raises :class:`DaliError` for anything wrong with the request, before any byte is written.
    """
    request_type = parameters.get("REQUEST", "doQuery")
    if request_type.lower() != "doquery":
        raise DaliError(f"REQUEST={request_type!r} is not supported: use REQUEST=doQuery")
    language = parameters.required("LANG")
    if language.upper() not in LANGUAGES:
        raise DaliError(f"LANG={language!r} is not supported: use one of {', '.join(LANGUAGES)}")
    query = parameters.required("QUERY")
    fmt = output_format(parameters.get("RESPONSEFORMAT") or parameters.get("FORMAT"))
    maxrec = maxrec_of(parameters)
    uploads = read_uploads(upload_specs(parameters.all("UPLOAD")), part,
                           int(current_app.config["UPLOAD_LIMIT_BYTES"]))

    state = archive()
    schema = TapSchema([*state.schema.schemas, upload_schema(uploads)]) if uploads else state.schema
    try:
        translation = adql.translate(query, schema)
        with query_errors(timeout):
            embeddings = similarity.reference_embeddings(translation.references)
        if translation.encodings:
            uploads = encode_uploads(uploads, translation.encodings)
    except adql.AdqlError as error:
        raise DaliError(str(error)) from None
    tables = {adql.upload_view(u.name): u.rows for u in uploads}
    chosen = similarity.plan(translation.sql, translation.neighbours, embeddings, tables,
                             parameters.get("ML_SEARCH", "auto").lower())
    stack = contextlib.ExitStack()
    try:
        found = chosen.run(Executor(stack, maxrec, timeout, stop, tables))
    except BaseException:
        stack.close()
        raise
    rows = CappedRows(found.stream, maxrec, found.infos)
    columns = [o.column for o in translation.output_columns]
    return Answer(fmt.mime, _closing(fmt.writer(rows, columns), stack),
                  lambda: rows.failure)


def _closing(chunks: Iterator[bytes], stack: contextlib.ExitStack) -> Iterator[bytes]:
    """``chunks``, then the query closed, however the reader stops (a client may hang up)."""
    with stack:
        yield from chunks

