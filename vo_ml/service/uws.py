"""Async TAP queries as UWS 1.1 jobs: ``/tap/async`` and everything under it.

The resources follow UWS 1.1 section 2.2: the job list (filtered by ``PHASE``, ``AFTER`` and
``LAST``), and per job its document (with blocking ``WAIT``), ``phase``, ``executionduration``,
``destruction``, ``quote``, ``owner``, ``error``, ``parameters`` and ``results``. Changes answer
with a 303 redirect, as UWS asks. Jobs persist in :mod:`vo_ml.service.jobs`; a job's query is
parsed by :func:`vo_ml.service.tap.parse_query` and run by the DAL pipeline as a sync request's
is (:func:`vo_ml.service.dal.execute`), with its executionDuration as the time limit, and its
result is the file ``results/result``.
"""

from __future__ import annotations

import functools
import threading
import time
from datetime import datetime
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, redirect, request, send_file
from lxml import etree

from vo_ml.service.context import base_url
from vo_ml.service.dal import (
    Answer,
    TimeLimitError,
    dali_error_response,
    execute,
    query_errors,
    request_parameters,
    request_part,
)
from vo_ml.service.dali import DaliError, DaliParameters
from vo_ml.service.jobs import (
    ACTIVE_PHASES,
    Job,
    JobNotFound,
    JobRunner,
    JobStore,
    PhaseError,
    iso,
    retention,
    utc_now,
)
from vo_ml.service.settings import Settings, settings
from vo_ml.service.tap import parse_query
from vo_ml.service.votable import VOTABLE_MIME, error_votable
from vo_ml.service.xmldoc import XSI, sub, xml_response, xsi

__all__ = ["bp", "start_jobs"]

bp = Blueprint("uws", __name__, url_prefix="/tap/async")

UWS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK = "http://www.w3.org/1999/xlink"
NSMAP = {"uws": UWS, "xlink": XLINK, "xsi": XSI}
PHASES = ("PENDING", "QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED", "UNKNOWN", "HELD",
          "SUSPENDED", "ARCHIVED")
#: Parameters that describe the job itself rather than the query it runs.
_CONTROL = {"PHASE", "ACTION", "EXECUTIONDURATION", "DESTRUCTION", "WAIT"}


def start_jobs(app: Flask, limits: Settings) -> None:
    """Open the app's job store and start this process's runner (see :mod:`jobs`)."""
    store = JobStore(limits.jobs_folder)
    runner = JobRunner(store, limits.async_max_running, functools.partial(_execute, app, store),
                       limits.async_sweep_seconds)
    app.extensions["vo_ml_jobs"] = runner.start()


def _runner() -> JobRunner:
    return current_app.extensions["vo_ml_jobs"]


def _store() -> JobStore:
    return _runner().store


def _execute(app: Flask, store: JobStore, job: Job, stop: threading.Event) -> None:
    """Run one job's query into its result file, and record how it ended."""
    with app.app_context():
        try:
            timeout = float(job.execution_duration)
            answer = execute(parse_query(DaliParameters(job.parameters),
                                         functools.partial(store.part, job.job_id), timeout),
                             timeout, job.base_url or settings().service_base_url or "", stop)
            store.complete(job.job_id, functools.partial(_write, answer, job.execution_duration),
                           answer.mimetype)
        except TimeLimitError:
            store.fail(job.job_id, f"the job ran longer than its executionDuration of "
                                   f"{job.execution_duration} s and was stopped; ask for a longer "
                                   "executionDuration or narrow the query")
        except DaliError as error:
            store.fail(job.job_id, error.message)


def _write(answer: Answer, execution_duration: int, path: Path) -> None:
    """The result into ``path``; a query that failed while its rows were written (its time
    limit, an abort: the store ignores failures of aborted jobs) raises as at its start."""
    with path.open("wb") as result, query_errors(execution_duration):
        for chunk in answer.chunks:
            result.write(chunk)
        failure = answer.failure()
        if failure is not None:
            raise failure


# --- the job list ---------------------------------------------------------------------------

@bp.route("", methods=["GET"])
def job_list() -> Response:
    parameters = request_parameters()
    phases = [p.upper() for p in parameters.all("PHASE")]
    for phase in phases:
        if phase not in PHASES:
            raise DaliError(f"PHASE={phase!r} is not a UWS phase: use one of {', '.join(PHASES)}")
    after = _time_parameter(parameters, "AFTER") if parameters.get("AFTER") else None
    last = _positive_int(parameters, "LAST") if parameters.get("LAST") else None
    root = etree.Element(f"{{{UWS}}}jobs", nsmap=NSMAP, version="1.1")
    for job in _store().list(phases, after, last):
        reference = _sub(root, "jobref", id=job.job_id)
        reference.set(f"{{{XLINK}}}href", _job_url(job.job_id))
        _sub(reference, "phase", job.phase)
        if job.run_id:
            _sub(reference, "runId", job.run_id)
        _nil(_sub(reference, "ownerId"))
        _sub(reference, "creationTime", iso(job.creation_time))
    return xml_response(root)


@bp.route("", methods=["POST"])
def create() -> Response:
    parameters = request_parameters()
    duration = _execution_duration(parameters) if parameters.get("EXECUTIONDURATION") else \
        settings().async_execution_duration
    destruction = _destruction(parameters) if parameters.get("DESTRUCTION") else \
        retention(settings().async_retention_days)
    run = parameters.get("PHASE", "").upper() == "RUN"
    if parameters.get("PHASE") and not run:
        raise DaliError(f"PHASE={parameters['PHASE']!r} cannot start a job: use PHASE=RUN or leave "
                        "it out (the job then waits in PENDING)")
    job = _store().create(_query_parameters(parameters), _inline_files(), duration, destruction,
                          base_url())
    if run:
        _store().queue(job.job_id)
        _runner().wake()
    return redirect(_job_url(job.job_id), code=303)


def _query_parameters(parameters: DaliParameters) -> list[tuple[str, str]]:
    return [(name, value) for name, value in parameters.pairs() if name not in _CONTROL]


def _inline_files() -> dict[str, bytes]:
    """Every file part of the request: an UPLOAD=name,param:part refers to one by its name."""
    limit = settings().upload_limit_bytes
    files = {name: request_part(name, limit) for name in request.files}
    for name, content in files.items():
        if len(content) > limit:
            raise DaliError(f"file part {name!r} is larger than the service's upload limit of "
                            f"{limit} bytes; upload fewer rows or columns", status=413)
    return files


# --- one job ------------------------------------------------------------------------------

@bp.route("/<job_id>", methods=["GET"])
def job_document(job_id: str) -> Response:
    parameters = request_parameters()
    job = _store().get(job_id)
    if parameters.get("WAIT"):
        job = _wait(job, parameters)
    return xml_response(_job_element(job))


@bp.route("/<job_id>", methods=["POST"])
def job_post(job_id: str) -> Response:
    parameters = request_parameters()
    if parameters.get("ACTION"):
        if parameters["ACTION"].upper() != "DELETE":
            raise DaliError(f"ACTION={parameters['ACTION']!r} is not supported: use ACTION=DELETE")
        return job_delete(job_id)
    if parameters.get("PHASE"):
        return _change_phase(job_id, parameters)
    _store().set_parameters(job_id, _query_parameters(parameters), _inline_files())
    return redirect(_job_url(job_id), code=303)


@bp.route("/<job_id>", methods=["DELETE"])
def job_delete(job_id: str) -> Response:
    _store().delete(job_id)
    _runner().wake()
    return redirect(_list_url(), code=303)


@bp.route("/<job_id>/phase", methods=["GET", "POST"])
def phase(job_id: str) -> Response:
    if request.method == "POST":
        return _change_phase(job_id, request_parameters())
    return _text(_store().get(job_id).phase)


def _change_phase(job_id: str, parameters: DaliParameters) -> Response:
    requested = parameters.required("PHASE").upper()
    if requested == "RUN":
        _store().queue(job_id)
    elif requested == "ABORT":
        _store().abort(job_id)
    else:
        raise DaliError(f"PHASE={requested!r} cannot be set: use PHASE=RUN or PHASE=ABORT")
    _runner().wake()
    return redirect(_job_url(job_id), code=303)


@bp.route("/<job_id>/executionduration", methods=["GET", "POST"])
def execution_duration(job_id: str) -> Response:
    if request.method == "POST":
        _store().set_execution_duration(job_id, _execution_duration(request_parameters()))
        return redirect(_job_url(job_id), code=303)
    return _text(str(_store().get(job_id).execution_duration))


@bp.route("/<job_id>/destruction", methods=["GET", "POST"])
def destruction(job_id: str) -> Response:
    if request.method == "POST":
        _store().set_destruction(job_id, _destruction(request_parameters()))
        return redirect(_job_url(job_id), code=303)
    return _text(iso(_store().get(job_id).destruction))


@bp.route("/<job_id>/quote")
@bp.route("/<job_id>/owner")
def not_known(job_id: str) -> Response:
    """quote and owner: this service makes no estimate and has no accounts, so both are empty."""
    _store().get(job_id)
    return _text("")


@bp.route("/<job_id>/error")
def error(job_id: str) -> Response:
    job = _store().get(job_id)
    if job.phase != "ERROR":
        raise DaliError(f"job {job_id} is {job.phase}, not ERROR: it has no error document", 404)
    return Response(error_votable(job.error or "unknown error"), mimetype=VOTABLE_MIME)


@bp.route("/<job_id>/parameters", methods=["GET", "POST"])
def parameters(job_id: str) -> Response:
    if request.method == "POST":
        _store().set_parameters(job_id, _query_parameters(request_parameters()), _inline_files())
        return redirect(_job_url(job_id), code=303)
    root = etree.Element(f"{{{UWS}}}parameters", nsmap=NSMAP)
    _parameters(root, _store().get(job_id))
    return xml_response(root)


@bp.route("/<job_id>/results")
def results(job_id: str) -> Response:
    root = etree.Element(f"{{{UWS}}}results", nsmap=NSMAP)
    _results(root, _store().get(job_id))
    return xml_response(root)


@bp.route("/<job_id>/results/result")
def result(job_id: str) -> Response:
    job = _store().get(job_id)
    if job.phase != "COMPLETED":
        raise DaliError(f"job {job_id} is {job.phase}: a result exists once it is COMPLETED", 404)
    return send_file(_store().result_path(job_id), mimetype=job.result_mime, conditional=True,
                     download_name=None)


# --- documents --------------------------------------------------------------------------------

def _job_element(job: Job) -> etree._Element:
    """The UWS 1.1 job document, elements in the order the schema gives."""
    root = etree.Element(f"{{{UWS}}}job", nsmap=NSMAP, version="1.1")
    _sub(root, "jobId", job.job_id)
    if job.run_id:
        _sub(root, "runId", job.run_id)
    _nil(_sub(root, "ownerId"))
    _sub(root, "phase", job.phase)
    _nil(_sub(root, "quote"))
    _sub(root, "creationTime", iso(job.creation_time))
    _timestamp(root, "startTime", job.start_time)
    _timestamp(root, "endTime", job.end_time)
    _sub(root, "executionDuration", str(job.execution_duration))
    _sub(root, "destruction", iso(job.destruction))
    _parameters(_sub(root, "parameters"), job)
    _results(_sub(root, "results"), job)
    if job.phase == "ERROR":
        summary = _sub(root, "errorSummary", type="fatal", hasDetail="true")
        _sub(summary, "message", job.error or "unknown error")
    return root


def _parameters(parent: etree._Element, job: Job) -> None:
    for name, value in job.parameters:
        _sub(parent, "parameter", value, id=name.lower())


def _results(parent: etree._Element, job: Job) -> None:
    if job.phase != "COMPLETED":
        return
    item = _sub(parent, "result", id="result", size=str(job.result_size or 0),
                **{"mime-type": job.result_mime or VOTABLE_MIME})
    item.set(f"{{{XLINK}}}href", f"{_job_url(job.job_id)}/results/result")
    item.set(f"{{{XLINK}}}type", "simple")


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attributes: str) -> etree._Element:
    """A UWS element."""
    return sub(parent, f"{{{UWS}}}{tag}", text, **attributes)


def _nil(element: etree._Element) -> etree._Element:
    return xsi(element, "nil", "true")


def _timestamp(parent: etree._Element, tag: str, moment: datetime | None) -> None:
    element = _sub(parent, tag, iso(moment))
    if moment is None:
        _nil(element)


def _text(value: str) -> Response:
    return Response(value, mimetype="text/plain")


def _job_url(job_id: str) -> str:
    return f"{_list_url()}/{job_id}"


def _list_url() -> str:
    return f"{base_url()}/tap/async"


# --- parameters -------------------------------------------------------------------------------

def _wait(job: Job, parameters: DaliParameters) -> Job:
    """UWS 1.1 section 2.2.1.3: block while the job is active and in the phase it was in (or
    in the PHASE given), for at most WAIT seconds (-1: the service's longest wait)."""
    try:
        wait = float(parameters["WAIT"])
    except ValueError:
        raise DaliError(f"WAIT={parameters['WAIT']!r} is not a number of seconds") from None
    longest = settings().async_max_wait
    wait = longest if wait < 0 else min(wait, longest)
    watched = parameters.get("PHASE", job.phase).upper()
    deadline = time.monotonic() + wait
    while job.phase in ACTIVE_PHASES and job.phase == watched and time.monotonic() < deadline:
        time.sleep(0.05)
        job = _store().get(job.job_id)
    return job


def _positive_int(parameters: DaliParameters, name: str) -> int:
    try:
        value = int(parameters[name])
    except ValueError:
        value = -1
    if value < 0:
        raise DaliError(f"{name}={parameters[name]!r} is not a whole number of 0 or more")
    return value


def _execution_duration(parameters: DaliParameters) -> int:
    """The executionDuration asked for, capped at the service's longest (0 asks for that)."""
    longest = settings().async_max_execution_duration
    asked = _positive_int(parameters, "EXECUTIONDURATION")
    return longest if asked == 0 else min(asked, longest)


def _time_parameter(parameters: DaliParameters, name: str) -> datetime:
    text = parameters[name].strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DaliError(f"{name}={text!r} is not an ISO 8601 time such as "
                        "2026-01-31T12:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=utc_now().tzinfo)


def _destruction(parameters: DaliParameters) -> datetime:
    """The destruction time asked for, no later than the service keeps jobs."""
    latest = retention(settings().async_max_retention_days)
    return min(_time_parameter(parameters, "DESTRUCTION"), latest)


@bp.errorhandler(JobNotFound)
def _not_found(error: JobNotFound) -> Response:
    return dali_error_response(DaliError(
        f"no job {error.args[0]!r}: it never existed, was deleted, or passed its destruction "
        "time; the job list at /tap/async shows the current jobs", 404))


@bp.errorhandler(PhaseError)
def _wrong_phase(error: PhaseError) -> Response:
    return dali_error_response(DaliError(str(error), 400))
