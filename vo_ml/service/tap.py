"""TAP 1.1 queries: ``/tap/sync``, and what an async job runs (:func:`parse_query`).

TAP's part of the DAL pipeline (:mod:`vo_ml.service.dal`) is its parsing and its plan: the DALI
parameters are checked, uploaded tables are read, the ADQL is translated against the published
TAP_SCHEMA plus the uploads (so only published tables, uploads and declared functions are
reachable), similarity references are checked, uploaded spectra are encoded (each row whose
answer is uncertain named in an ``INFO name="warning"`` of the result), and the translation is
planned
(:func:`vo_ml.service.similarity.plan`). The pipeline runs the plan and streams the rows in the
format asked for; a VOTable with a publisher DID column ends with the DataLink service
descriptors of :mod:`vo_ml.service.descriptors`.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response

from vo_ml import adql
from vo_ml.archive.tap_schema import TapSchema
from vo_ml.service import similarity
from vo_ml.service.context import archive
from vo_ml.service.dal import DalQuery, maxrec_of, query_errors, request_part, serve
from vo_ml.service.dali import DaliError, DaliParameters
from vo_ml.service.descriptors import result_descriptors
from vo_ml.service.encoding import encode_uploads
from vo_ml.service.formats import output_format
from vo_ml.service.settings import settings
from vo_ml.service.uploads import read_uploads, upload_schema, upload_specs

__all__ = ["bp", "parse_query", "LANGUAGES"]

bp = Blueprint("tap", __name__, url_prefix="/tap")

#: LANG values accepted for ADQL (TAP 1.1 section 2.3.1).
LANGUAGES = ("ADQL", "ADQL-2.0", "ADQL-2.1")

#: Reads multipart part ``name`` of the request, at most ``limit`` + 1 bytes; None if absent.
PartReader = Callable[[str, int], bytes | None]


@bp.route("/sync", methods=["GET", "POST"])
def sync() -> Response:
    return serve(lambda parameters: parse_query(parameters, request_part,
                                                settings().query_timeout))


def parse_query(parameters: DaliParameters, part: PartReader, timeout: float) -> DalQuery:
    """One TAP query given its DALI parameters: its plan, format and columns. The rows named
    as similarity references are looked up within ``timeout``.

    Raises :class:`DaliError` for anything wrong with the request.
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
                           settings().upload_limit_bytes)

    state = archive()
    schema = TapSchema([*state.schema.schemas, upload_schema(uploads)]) if uploads else state.schema
    warnings: list[str] = []
    try:
        translation = adql.translate(query, schema)
        with query_errors(timeout):
            embeddings = similarity.reference_embeddings(translation.references)
        if translation.encodings:
            uploads, warnings = encode_uploads(uploads, translation.encodings)
    except adql.AdqlError as error:
        raise DaliError(str(error)) from None
    tables = {adql.upload_view(u.name): u.rows for u in uploads}
    chosen = similarity.plan(translation.sql, translation.neighbours, embeddings, tables,
                             parameters.get("ML_SEARCH", "auto").lower())
    columns = [o.column for o in translation.output_columns]
    return DalQuery(chosen, fmt, columns, maxrec, tables,
                    tuple(("warning", warning) for warning in warnings),
                    result_descriptors(columns, [o.name for o in translation.output_columns]))
