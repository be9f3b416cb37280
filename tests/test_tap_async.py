"""Async TAP (UWS 1.1) over HTTP against `vo-ml serve`, with pyvo and plain requests as clients.

Each test that changes how jobs run serves its own copy of the session archive, so its jobs
folder (``<db>.jobs``) is its own.
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from conftest import SLOW, TABLE, copy_archive, server_process, serving
from lxml import etree

UWS = {"uws": "http://www.ivoa.net/xml/UWS/v1.0", "xlink": "http://www.w3.org/1999/xlink"}
QUICK = f"SELECT TOP 5 obs_id, teff FROM {TABLE} ORDER BY teff"


@pytest.fixture
def own_db(archive, tmp_path):
    return copy_archive(archive, tmp_path)


def _create(root: str, query: str, **extra: str) -> str:
    response = requests.post(f"{root}/tap/async", data={"LANG": "ADQL", "QUERY": query, **extra},
                             allow_redirects=False, timeout=30)
    assert response.status_code == 303
    return response.headers["Location"]


def _job(url: str, **params: str) -> etree._Element:
    response = requests.get(url, params=params, timeout=120)
    assert response.status_code == 200
    return etree.fromstring(response.content)


def _phase(url: str) -> str:
    return requests.get(f"{url}/phase", timeout=30).text


def _wait_for(url: str, phases: tuple[str, ...], seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while (phase := _phase(url)) not in phases:
        assert time.monotonic() < deadline, f"job still {phase}"
        time.sleep(0.1)
    return phase


def test_pyvo_submits_waits_fetches_and_deletes(service):
    job = service.submit_job(QUICK, maxrec=3)
    assert job.phase == "PENDING"
    job.run()
    job.wait(timeout=60)
    assert job.phase == "COMPLETED"
    result = job.fetch_result()
    teff = [float(r["teff"]) for r in result]
    assert len(teff) == 3 and teff == sorted(teff)
    assert any(i.name == "QUERY_STATUS" and i.value == "OVERFLOW"
               for i in result.votable.resources[0].infos)
    url = job.url
    job.delete()
    assert requests.get(url, timeout=30).status_code == 404


def test_a_failing_query_ends_in_error_with_a_summary_and_an_error_document(tap_url):
    url = _create(tap_url.removesuffix("/tap"), f"SELECT snrr FROM {TABLE}", PHASE="RUN")
    assert _wait_for(url, ("ERROR",)) == "ERROR"
    document = _job(url)
    message = document.findtext("uws:errorSummary/uws:message", namespaces=UWS)
    assert "unknown column 'snrr'" in message
    assert "did you mean 'snr'" in message
    error = requests.get(f"{url}/error", timeout=30)
    assert error.status_code == 200 and b'value="ERROR"' in error.content


def test_the_job_document_follows_the_uws_schema_order(tap_url):
    url = _create(tap_url.removesuffix("/tap"), QUICK, RUNID="order-check")
    document = _job(url)
    tags = [etree.QName(child).localname for child in document]
    assert tags == ["jobId", "runId", "ownerId", "phase", "quote", "creationTime", "startTime",
                    "endTime", "executionDuration", "destruction", "parameters", "results"]
    assert document.get("version") == "1.1"
    parameters = {p.get("id"): p.text for p in document.find("uws:parameters", UWS)}
    assert parameters["query"] == QUICK and parameters["runid"] == "order-check"
    requests.post(url, data={"ACTION": "DELETE"}, timeout=30)


def test_parameters_change_only_while_pending(tap_url):
    url = _create(tap_url.removesuffix("/tap"), QUICK)
    moved = requests.post(f"{url}/parameters", data={"MAXREC": "1"}, allow_redirects=False,
                          timeout=30)
    assert moved.status_code == 303
    requests.post(f"{url}/executionduration", data={"EXECUTIONDURATION": "5"}, timeout=30)
    assert requests.get(f"{url}/executionduration", timeout=30).text == "5"
    requests.post(f"{url}/phase", data={"PHASE": "RUN"}, timeout=30)
    assert _wait_for(url, ("COMPLETED",)) == "COMPLETED"
    refused = requests.post(f"{url}/parameters", data={"MAXREC": "2"}, timeout=30)
    assert refused.status_code == 400 and b"COMPLETED" in refused.content
    result = requests.get(f"{url}/results/result", timeout=30)
    assert result.content.count(b"OVERFLOW") == 1  # MAXREC=1 applied
    requests.delete(url, timeout=30)


def test_job_list_filters_by_phase_after_and_last(tap_url):
    root = tap_url.removesuffix("/tap")
    first = _create(root, QUICK)
    time.sleep(0.05)
    cut = datetime.now(UTC)
    time.sleep(0.05)
    second = _create(root, QUICK)
    third = _create(root, QUICK, PHASE="RUN")
    _wait_for(third, ("COMPLETED",))

    def listed(**params: str) -> list[str]:
        document = etree.fromstring(requests.get(f"{tap_url}/async", params=params, timeout=30).content)
        return [ref.get(f"{{{UWS['xlink']}}}href") for ref in document.findall("uws:jobref", UWS)]

    assert {first, second} <= set(listed(PHASE="PENDING")) and third not in listed(PHASE="PENDING")
    after = listed(AFTER=cut.isoformat().replace("+00:00", "Z"))
    assert first not in after and {second, third} <= set(after)
    assert listed(LAST="2") == [third, second]
    bad = requests.get(f"{tap_url}/async", params={"PHASE": "DONE"}, timeout=30)
    assert bad.status_code == 400 and b"not a UWS phase" in bad.content
    for url in (first, second, third):
        requests.delete(url, timeout=30)


def test_wait_blocks_until_the_phase_changes(own_db):
    with serving(own_db, {"ASYNC_MAX_RUNNING": "1"}) as root:
        url = _create(root, SLOW, EXECUTIONDURATION="2")
        started = time.monotonic()
        assert _job(url, WAIT="1").findtext("uws:phase", namespaces=UWS) == "PENDING"
        assert 0.9 < time.monotonic() - started < 5
        requests.post(f"{url}/phase", data={"PHASE": "RUN"}, timeout=30)
        started = time.monotonic()
        document = _job(url, WAIT="30", PHASE="EXECUTING")
        while document.findtext("uws:phase", namespaces=UWS) in ("QUEUED", "EXECUTING"):
            document = _job(url, WAIT="30")
        assert document.findtext("uws:phase", namespaces=UWS) == "ERROR"
        assert time.monotonic() - started < 20


def test_execution_duration_stops_the_query_and_says_why(own_db):
    with serving(own_db) as root:
        url = _create(root, SLOW, EXECUTIONDURATION="1", PHASE="RUN")
        assert _wait_for(url, ("ERROR", "COMPLETED"), 30) == "ERROR"
        document = _job(url)
        assert "executionDuration of 1 s" in document.findtext("uws:errorSummary/uws:message",
                                                               namespaces=UWS)
        started = datetime.fromisoformat(document.findtext("uws:startTime", namespaces=UWS))
        ended = datetime.fromisoformat(document.findtext("uws:endTime", namespaces=UWS))
        assert ended - started < timedelta(seconds=5)


def test_the_concurrency_limit_queues_jobs_and_abort_frees_the_slot(own_db):
    with serving(own_db, {"ASYNC_MAX_RUNNING": "1"}) as root:
        running = _create(root, SLOW, PHASE="RUN")
        _wait_for(running, ("EXECUTING",))
        waiting = _create(root, QUICK, PHASE="RUN")
        time.sleep(1.0)
        assert _phase(waiting) == "QUEUED"
        aborted = requests.post(f"{running}/phase", data={"PHASE": "ABORT"}, allow_redirects=False,
                                timeout=30)
        assert aborted.status_code == 303 and _phase(running) == "ABORTED"
        assert _wait_for(waiting, ("COMPLETED",), 30) == "COMPLETED"


def test_jobs_past_their_destruction_time_are_removed(own_db):
    with serving(own_db, {"ASYNC_SWEEP_SECONDS": "0.2"}) as root:
        url = _create(root, QUICK, PHASE="RUN")
        _wait_for(url, ("COMPLETED",))
        kept = _create(root, QUICK)
        soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
        requests.post(f"{url}/destruction", data={"DESTRUCTION": soon}, timeout=30)
        assert requests.get(f"{url}/destruction", timeout=30).text.startswith(soon[:19])
        deadline = time.monotonic() + 20
        while requests.get(url, timeout=30).status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        job_id = url.rsplit("/", 1)[1]
        assert not (own_db.parent / "miles.duckdb.jobs" / job_id).exists()
        assert requests.get(kept, timeout=30).status_code == 200


def test_a_killed_service_leaves_every_job_consistent_after_restart(own_db):
    """kill -9 while a job executes: after a restart that job is ERROR (documented), and the
    completed job, its result, and the pending job are exactly as they were."""
    with server_process(own_db) as (root, server):
        done = _create(root, QUICK, PHASE="RUN")
        _wait_for(done, ("COMPLETED",))
        result_before = requests.get(f"{done}/results/result", timeout=30).content
        pending = _create(root, QUICK, RUNID="still-pending")
        executing = _create(root, SLOW, PHASE="RUN")
        _wait_for(executing, ("EXECUTING",))
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
    port = int(root.rsplit(":", 1)[1])
    with serving(own_db, port=port) as again:
        assert again == root
        assert _phase(executing) == "ERROR"
        message = _job(executing).findtext("uws:errorSummary/uws:message", namespaces=UWS)
        assert "service stopped while this job was executing" in message
        assert _phase(done) == "COMPLETED"
        assert requests.get(f"{done}/results/result", timeout=30).content == result_before
        assert _phase(pending) == "PENDING"
        assert _job(pending).findtext("uws:runId", namespaces=UWS) == "still-pending"
        requests.post(f"{pending}/phase", data={"PHASE": "RUN"}, timeout=30)
        assert _wait_for(pending, ("COMPLETED",)) == "COMPLETED"


def test_unknown_jobs_and_bad_phase_requests_get_dali_errors(tap_url):
    missing = requests.get(f"{tap_url}/async/nosuchjob", timeout=30)
    assert missing.status_code == 404 and b'value="ERROR"' in missing.content
    url = _create(tap_url.removesuffix("/tap"), QUICK)
    bad = requests.post(f"{url}/phase", data={"PHASE": "SUSPEND"}, timeout=30)
    assert bad.status_code == 400 and b"PHASE=RUN or PHASE=ABORT" in bad.content
    no_result = requests.get(f"{url}/results/result", timeout=30)
    assert no_result.status_code == 404
    gone = requests.delete(url, allow_redirects=False, timeout=30)
    assert gone.status_code == 303 and gone.headers["Location"].endswith("/tap/async")
