"""IVOA SSA 1.1 simple spectral access: ``/ssa`` finds spectra, ``/ssa/data`` hands out their files,
``/ssa/capabilities`` says what it can do (VOSI).

SSA's part of the DAL pipeline (:mod:`vo_ml.service.dal`) is its parsing and its plan, one SQL
statement on the same published table TAP reads, so a spectrum found by ADQL is found by SSA too;
the rows are written by the VOTable writer TAP uses. User values are parsed into astropy objects
at the boundary (SkyCoord, Quantity, Time), which rejects nonsense with a message naming the
parameter, and reach SQL as bound parameters; only the cone's centre is written into the SQL, as
the finite numbers it was parsed into, since the great-circle formula reads each coordinate
several times (as ADQL's own numbers are written).

The files served are the originals recorded in ``vo_ml.ingested`` at ingest: a request names a
publisher DID, never a path, so nothing outside the archive's own sources can be read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from astropy import units as u
from astropy.coordinates import Angle, SkyCoord
from astropy.time import Time
from flask import Blueprint, Response, send_file

from vo_ml.adql.geometry import great_circle_sql
from vo_ml.archive.tap_schema import Column, Table
from vo_ml.service.capabilities import add_ssa_capabilities
from vo_ml.service.context import archive
from vo_ml.service.dal import DalQuery, SqlPlan, maxrec_of, request_parameters, serve
from vo_ml.service.dali import DaliError, DaliParameters
from vo_ml.service.datalink import spectrum_file
from vo_ml.service.descriptors import result_descriptors
from vo_ml.service.formats import VOTABLE_OUTPUTS, output_format
from vo_ml.service.settings import settings
from vo_ml.service.vosi import capabilities_response
from vo_ml.spectra.access import FITS_MIME, VOTABLE_MIME, file_format

__all__ = ["bp", "parse_request"]

bp = Blueprint("ssa", __name__, url_prefix="/ssa")

#: SIZE when POS comes alone: the diameter of the search cone (SSA 1.1 section 8.5.2).
DEFAULT_SIZE = Angle(0.1, u.deg)
#: FORMAT values and the file formats each one admits; None admits every format. The files are
#: served as ingested, so "native" is all of them and "compliant" the Spectrum DM VOTables.
FORMAT_CHOICES: dict[str, tuple[str, ...] | None] = {
    "all": None, "native": None, "metadata": (),
    "compliant": (VOTABLE_MIME,), "votable": (VOTABLE_MIME,), VOTABLE_MIME: (VOTABLE_MIME,),
    "fits": (FITS_MIME,), FITS_MIME: (FITS_MIME,),
}
#: Columns a table needs to be searched by SSA: the ObsCore ones every spectrum table carries.
REQUIRED_COLUMNS = ("obs_publisher_did", "obs_id", "obs_collection", "target_name", "s_ra", "s_dec",
                    "em_min", "em_max", "em_res_power", "t_min", "t_exptime", "instrument_name",
                    "dataproduct_type", "access_url", "access_format")
SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class SsaQuery:
    """One queryData request, parsed: each constraint is None when the request does not set it."""

    cone: tuple[SkyCoord, Angle] | None = None
    band: tuple[u.Quantity | None, u.Quantity | None] | None = None
    time: tuple[Time | None, Time | None] | None = None
    target: str | None = None
    formats: tuple[str, ...] | None = None


@bp.route("", methods=["GET", "POST"])
def query_data() -> Response:
    return serve(parse_request)


@bp.route("/capabilities")
def capabilities() -> Response:
    """VOSI capabilities of the SSA service, as its registry record declares them."""
    return capabilities_response(add_ssa_capabilities)


@bp.route("/data")
def data() -> Response:
    """The original file of the spectrum whose publisher DID is ``ID``."""
    path, _ = spectrum_file(request_parameters().required("ID"))
    return send_file(path, mimetype=file_format(path), download_name=path.name, conditional=True)


def parse_request(parameters: DaliParameters) -> DalQuery:
    """SSA's part of the DAL pipeline: a queryData request as one SQL statement on the SSA
    table, written as a VOTable whose fields carry SSA's utypes."""
    request_type = parameters.required("REQUEST")
    if request_type.lower() != "querydata":
        raise DaliError(f"REQUEST={request_type!r} is not supported: use REQUEST=queryData")
    output = output_format(parameters.get("RESPONSEFORMAT"), VOTABLE_OUTPUTS)
    maxrec = maxrec_of(parameters)
    query = parse_query(parameters)
    table = ssa_table()
    conditions, values = query_conditions(query)
    columns = [column for _, column in RESULT_COLUMNS]
    return DalQuery(SqlPlan(_select(table, conditions), values), output, columns, maxrec,
                    infos=(("SSA_TABLE", table.name),),
                    descriptors=result_descriptors(columns, [c.name for c in columns]))


def ssa_table() -> Table:
    """``SSA_TABLE`` if configured, else the first published table (not a view such as
    ivoa.obscore, which has no embedding or labels) with the ObsCore columns."""
    tables = archive().schema.tables
    configured = settings().ssa_table
    candidates = [tables.get(configured.lower())] if configured else \
        [t for t in tables.values() if t.holds_spectra]
    for table in candidates:
        if table is not None and all(table.column(name) for name in REQUIRED_COLUMNS):
            return table
    wanted = f"table {configured!r}" if configured else "any published table"
    raise DaliError(f"SSA is not available: {wanted} lacks the ObsCore columns "
                    f"{', '.join(REQUIRED_COLUMNS)}", 500)


def parse_query(parameters: Mapping[str, str]) -> SsaQuery:
    """The constraints of a queryData request as astropy objects; DaliError names a bad one."""
    def given(name: str) -> str | None:
        return parameters.get(name, "").strip() or None

    pos, size, band, time = given("POS"), given("SIZE"), given("BAND"), given("TIME")
    return SsaQuery(
        cone=(parse_pos(pos), parse_size(size) if size else DEFAULT_SIZE) if pos else None,
        band=parse_band(band) if band else None,
        time=parse_time(time) if time else None,
        target=given("TARGETNAME"),
        formats=parse_format(given("FORMAT") or "all"),
    )


def parse_pos(text: str) -> SkyCoord:
    """``ra,dec`` in degrees, optionally followed by ``;ICRS``, the only frame served."""
    position, _, frame = text.partition(";")
    if frame and frame.strip().upper() != "ICRS":
        raise DaliError(f"POS={text!r} uses frame {frame.strip()!r}: only ICRS is served")
    try:
        ra, dec = (float(v) for v in position.split(","))
        if not (math.isfinite(ra) and math.isfinite(dec)):
            raise ValueError(text)
        return SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
    except ValueError:
        raise DaliError(f"POS={text!r} is not 'ra,dec' in degrees (ICRS), e.g. POS=219.9,-60.8") from None


def parse_size(text: str) -> Angle:
    """The diameter of the search cone in degrees."""
    try:
        size = float(text)
    except ValueError:
        size = math.nan
    if not 0 < size <= 180:
        raise DaliError(f"SIZE={text!r} is not a cone diameter in degrees between 0 and 180")
    return Angle(size, u.deg)


def parse_band(text: str) -> tuple[u.Quantity | None, u.Quantity | None]:
    """``lo/hi`` wavelengths in metres, either end open; one value asks for spectra covering it."""
    return _parse_range(text, "BAND", _metres,
                        "'lo/hi' wavelengths in metres, e.g. BAND=4e-7/5e-7", "the shorter wavelength")


def _parse_range(text: str, name: str, convert: Callable[[str], object], form: str, first: str) -> tuple:
    """A DALI ``start/end`` range (either end open; a single value is both ends), converted."""
    start, slash, end = text.partition("/")
    try:
        bounds = [convert(start), convert(end)] if slash else [convert(start)] * 2
    except ValueError:
        raise DaliError(f"{name}={text!r} is not {form} (either end may be left open)") from None
    if bounds[0] is not None and bounds[1] is not None and bounds[0] > bounds[1]:
        raise DaliError(f"{name}={text!r} starts after it ends: give {first} first")
    return bounds[0], bounds[1]


def _metres(text: str) -> u.Quantity | None:
    if not text.strip():
        return None
    value = float(text)
    if not value > 0 or math.isinf(value):
        raise ValueError(text)
    return value * u.m


def parse_time(text: str) -> tuple[Time | None, Time | None]:
    """``start/end`` as MJD or ISO 8601 (UTC), either end open; one value asks for that instant."""
    return _parse_range(text, "TIME", _time, "'start/end' as MJD or ISO 8601, e.g. TIME=56000/56100 "
                        "or TIME=2012-03-01/2012-04-01", "the earlier time")


def _time(text: str) -> Time | None:
    text = text.strip()
    if not text:
        return None
    try:
        return Time(float(text), format="mjd", scale="utc")
    except ValueError:
        return Time(text, format="isot" if "T" in text else "iso", scale="utc")


def parse_format(text: str) -> tuple[str, ...] | None:
    """The file formats a comma-separated FORMAT admits; None for all, () for metadata only."""
    admitted: set[str] = set()
    for choice in (c.strip().lower() for c in text.split(",")):
        if choice not in FORMAT_CHOICES:
            raise DaliError(f"FORMAT={text!r} is not supported: use one of "
                            f"{', '.join(FORMAT_CHOICES)}")
        formats = FORMAT_CHOICES[choice]
        if formats is None:
            return None
        admitted.update(formats)
    return tuple(sorted(admitted))


def query_conditions(query: SsaQuery) -> tuple[list[str], list]:
    """SQL conditions on the table (alias ``t``) and the values bound to them, in order."""
    conditions: list[str] = []
    values: list = []
    if query.cone:
        centre, size = query.cone
        ra, dec = (repr(float(angle.deg)) for angle in (centre.ra, centre.dec))
        conditions.append(f"{great_circle_sql('t.s_ra', 't.s_dec', ra, dec)} <= ?")
        values.append(size.deg / 2)
    if query.band:
        _overlap(conditions, values, "t.em_min", "t.em_max",
                 [None if b is None else b.to_value(u.m) for b in query.band])
    if query.time:
        _overlap(conditions, values, "t.t_min",
                 f"t.t_min + coalesce(t.t_exptime, 0) / {SECONDS_PER_DAY}",
                 [None if b is None else b.mjd for b in query.time])
    if query.target:
        conditions.append("replace(lower(t.target_name), ' ', '') = ?")
        values.append(query.target.lower().replace(" ", ""))
    if query.formats == ():
        conditions.append("FALSE")
    elif query.formats:
        conditions.append(f"t.access_format IN ({', '.join('?' for _ in query.formats)})")
        values += query.formats
    return conditions, values


def _overlap(conditions: list[str], values: list, start: str, stop: str,
             bounds: Sequence[float | None]) -> None:
    """Rows whose [start, stop] interval overlaps the requested one; an open end is no limit."""
    low, high = bounds
    if low is not None:
        conditions.append(f"{stop} >= ?")
        values.append(low)
    if high is not None:
        conditions.append(f"{start} <= ?")
        values.append(high)


#: The position of a row as a DALI point, NULL when it has none.
POSITION_SQL = ("CASE WHEN t.s_ra IS NULL OR t.s_dec IS NULL THEN NULL "
                "ELSE [t.s_ra, t.s_dec]::DOUBLE[2] END")
T_MID = f"t.t_min + coalesce(t.t_exptime, 0) / {2 * SECONDS_PER_DAY}"

#: What each result column is, in SQL on the table ``t``, and as a FIELD labelled with the SSA 1.1
#: utype and UCD that pyvo's SSARecord reads. The access URL is stored relative to the service
#: and made absolute on its way out, as every access reference is (vo_ml.service.access).
RESULT_COLUMNS: tuple[tuple[str, Column], ...] = (
    ("concat_ws(' ', t.obs_collection, t.target_name, t.obs_id)",
     Column("title", "char", "Title of the spectrum: collection, target and observation",
            ucd="meta.title;meta.dataset", utype="ssa:DataID.Title")),
    ("t.obs_publisher_did",
     Column("publisher_did", "char", "IVOA publisher dataset identifier; the ID of /ssa/data",
            ucd="meta.ref.ivoid", utype="ssa:Curation.PublisherDID")),
    ("t.access_url",
     Column("access_url", "char", "URL of the spectrum file, as it was ingested",
            ucd="meta.ref.url", utype="ssa:Access.Reference")),
    ("t.access_format",
     Column("access_format", "char", "MIME type of the file at access_url",
            ucd="meta.code.mime", utype="ssa:Access.Format")),
    ("t.target_name",
     Column("target_name", "char", "Name of the observed target", ucd="meta.id;src",
            utype="ssa:Target.Name")),
    (POSITION_SQL,
     Column("target_pos", "double", "ICRS position of the target (RA, Dec)", arraysize="2",
            unit="deg", ucd="pos.eq;meta.main", utype="ssa:Target.Pos")),
    ("t.em_min",
     Column("em_min", "double", "Shortest wavelength covered", unit="m", ucd="em.wl;stat.min",
            utype="ssa:Char.SpectralAxis.Coverage.Bounds.Start")),
    ("t.em_max",
     Column("em_max", "double", "Longest wavelength covered", unit="m", ucd="em.wl;stat.max",
            utype="ssa:Char.SpectralAxis.Coverage.Bounds.Stop")),
    ("t.em_res_power",
     Column("em_res_power", "double", "Resolving power lambda/delta-lambda", ucd="spect.resolution",
            utype="ssa:Char.SpectralAxis.ResPower")),
    (T_MID,
     Column("t_mid", "double", "Middle of the exposure, as MJD", unit="d", ucd="time.epoch",
            utype="ssa:Char.TimeAxis.Coverage.Location.Value")),
    (f"strftime(TIMESTAMP '1858-11-17' + to_microseconds(CAST(({T_MID}) * 86400e6 AS BIGINT)), "
     "'%Y-%m-%d %H:%M:%S')",
     Column("date_obs", "char", "Middle of the exposure, as ISO 8601 UTC", ucd="time.epoch",
            utype="ssa:DataID.Date")),
    ("t.t_exptime",
     Column("t_exptime", "double", "Exposure time", unit="s", ucd="time.duration;obs.exposure",
            utype="ssa:Char.TimeAxis.Coverage.Bounds.Extent")),
    ("t.instrument_name",
     Column("instrument_name", "char", "Instrument that took the spectrum", ucd="meta.id;instr",
            utype="ssa:DataID.Instrument")),
    ("t.obs_collection",
     Column("obs_collection", "char", "Data collection of the spectrum", ucd="meta.id",
            utype="ssa:DataID.Collection")),
    ("t.dataproduct_type",
     Column("dataproduct_type", "char", "Type of the dataset", ucd="meta.code.class",
            utype="ssa:Dataset.Type")),
)


def _select(table: Table, conditions: Sequence[str]) -> str:
    """The query for ``table`` under ``conditions``."""
    select = ", ".join(f'{sql} AS "{column.name}"' for sql, column in RESULT_COLUMNS)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"SELECT {select} FROM {table.sql_name} AS t {where} ORDER BY t.obs_publisher_did"
