"""Async TAP jobs that persist: a SQLite job table and a folder per job, shared by every process.

Each job is a row in ``JOBS_DIR/jobs.sqlite3`` and a folder ``JOBS_DIR/<job id>/`` holding its
inline uploads and its result. Every change of phase is one SQLite transaction, and a result
file is complete (written to a temporary name, then renamed) before the row says COMPLETED, so a
crash at any moment leaves each job in a phase its files agree with.

Jobs run in the service processes themselves. Each process has one :class:`JobRunner`, which
claims QUEUED jobs in creation order while fewer than ``ASYNC_MAX_RUNNING`` jobs execute across
all processes (the count and the claim are one write transaction), and runs them on its own
threads. The process that claims a job records its process id and start time; when a service
starts, or a runner sweeps, EXECUTING jobs whose process is gone are set to ERROR, with a message
saying the service stopped while they ran. Jobs past their destruction time are deleted, row and
folder, by the same sweep.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

from vo_ml.files import replacing

__all__ = ["sqlite_transaction", "Job", "JobStore", "JobRunner", "JobNotFound", "PhaseError", "ACTIVE_PHASES",
           "FINAL_PHASES", "utc_now", "iso"]

log = logging.getLogger(__name__)

#: Phases in which a job can still change without being asked to (UWS 1.1 section 2.1.3).
ACTIVE_PHASES = ("PENDING", "QUEUED", "EXECUTING")
FINAL_PHASES = ("COMPLETED", "ERROR", "ABORTED")
RESULT_NAME = "result"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    run_id TEXT,
    phase TEXT NOT NULL,
    parameters TEXT NOT NULL,
    creation_time TEXT NOT NULL,
    start_time TEXT,
    end_time TEXT,
    execution_duration INTEGER NOT NULL,
    destruction TEXT NOT NULL,
    error TEXT,
    result_mime TEXT,
    result_size INTEGER,
    owner_pid INTEGER,
    owner_started REAL,
    queued_at TEXT,
    base_url TEXT
);
CREATE INDEX IF NOT EXISTS jobs_phase ON jobs (phase, queued_at);
"""


#: Columns added to the job table since its first version, and their SQL types: a job store
#: made by an older version gets them when it is opened (its jobs' values stay NULL).
_ADDED_COLUMNS = {"base_url": "TEXT"}


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Give a job table made by an older version the columns of :data:`_ADDED_COLUMNS`."""
    present = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    for name, sql_type in _ADDED_COLUMNS.items():
        if name not in present:
            db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {sql_type}")


@contextmanager
def sqlite_transaction(path: Path, write: bool = True) -> Iterator[sqlite3.Connection]:
    """One transaction on the SQLite file at ``path``, in WAL mode: a write takes the lock at
    once (BEGIN IMMEDIATE: other writers wait), a read works on a snapshot and never blocks or
    waits for a writer. A crash leaves the last committed state; an error rolls back, and a
    lock never obtained is reported as itself."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    finally:
        db.close()


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    """A UTC time as UWS writes it (ISO 8601, milliseconds, Z); sorts as text in time order."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


class JobNotFound(LookupError):
    """No job has this id (never created, deleted, or destroyed)."""


class PhaseError(ValueError):
    """The job is not in a phase that allows what was asked (e.g. new parameters once running)."""


@dataclass(frozen=True)
class Job:
    """One job as stored."""

    job_id: str
    run_id: str | None
    phase: str
    parameters: list[tuple[str, str]]
    creation_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    execution_duration: int
    destruction: datetime
    error: str | None
    result_mime: str | None
    result_size: int | None
    #: The service's base URL for the request that created the job: its result's access URLs
    #: are made absolute under it, as a sync query's are under its own request's (None for a
    #: job of a version that did not record it).
    base_url: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(row["job_id"], row["run_id"], row["phase"],
                   [tuple(p) for p in json.loads(row["parameters"])],
                   _parse(row["creation_time"]), _parse(row["start_time"]),
                   _parse(row["end_time"]), row["execution_duration"], _parse(row["destruction"]),
                   row["error"], row["result_mime"], row["result_size"], row["base_url"])


class JobStore:
    """The jobs of one service, in ``directory``; safe to share between threads and processes."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "jobs.sqlite3"
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            _add_missing_columns(db)
        finally:
            db.close()

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        with sqlite_transaction(self.path, write) as db:
            db.row_factory = sqlite3.Row
            yield db

    def folder(self, job_id: str) -> Path:
        return self.directory / job_id

    def result_path(self, job_id: str) -> Path:
        return self.folder(job_id) / RESULT_NAME

    def create(self, parameters: Sequence[tuple[str, str]], files: dict[str, bytes],
               execution_duration: int, destruction: datetime, base_url: str) -> Job:
        """A new PENDING job; ``files`` (inline uploads) are stored in its folder first."""
        job_id = secrets.token_hex(8)
        folder = self.folder(job_id)
        folder.mkdir()
        for name, content in files.items():
            (folder / f"part-{name}").write_bytes(content)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (job_id, run_id, phase, parameters, creation_time, "
                "execution_duration, destruction, base_url) VALUES (?, ?, 'PENDING', ?, ?, ?, ?, ?)",
                [job_id, _run_id(parameters), json.dumps(list(parameters)), iso(utc_now()),
                 execution_duration, iso(destruction), base_url])
            return _job(db, job_id)

    def part(self, job_id: str, name: str, limit: int) -> bytes | None:
        """An inline upload stored with the job, as :data:`tap.PartReader` wants it."""
        path = self.folder(job_id) / f"part-{name}"
        if not path.is_file():
            return None
        with path.open("rb") as stored:
            return stored.read(limit + 1)

    def get(self, job_id: str) -> Job:
        with self._transaction(write=False) as db:
            return _job(db, job_id)

    def list(self, phases: Iterable[str] = (), after: datetime | None = None,
             last: int | None = None) -> list[Job]:
        """Jobs filtered as UWS 1.1 section 2.2.1.1 says: by phase, then creation time, then the
        ``last`` most recently created (newest first); otherwise in creation order."""
        conditions, values = [], []
        phases = list(phases)
        if phases:
            conditions.append(f"phase IN ({', '.join('?' for _ in phases)})")
            values.extend(phases)
        else:
            conditions.append("phase != 'ARCHIVED'")
        if after is not None:
            conditions.append("creation_time > ?")
            values.append(iso(after))
        order = "creation_time DESC" if last is not None else "creation_time"
        limit = f" LIMIT {int(last)}" if last is not None else ""
        with self._transaction(write=False) as db:
            rows = db.execute(f"SELECT * FROM jobs WHERE {' AND '.join(conditions)} "
                              f"ORDER BY {order}{limit}", values).fetchall()
        return [Job.from_row(r) for r in rows]

    def _update(self, job_id: str, allowed: Sequence[str], what: str, assignments: str,
                values: Sequence | Callable[[Job], Sequence] = (),
                done: Sequence[str] = ()) -> Job:
        """Apply ``assignments`` if the job's phase is one of ``allowed``; leave it as it is in a
        phase of ``done`` (asking again changes nothing); else PhaseError. The job as it ends.
        ``values`` may be worked out from the job as it is inside the transaction."""
        with self._transaction() as db:
            job = _job(db, job_id)
            if job.phase in done:
                return job
            if job.phase not in allowed:
                raise PhaseError(f"job {job_id} is {job.phase}; {what} needs it to be "
                                 f"{' or '.join(allowed)}")
            values = values(job) if callable(values) else values
            db.execute(f"UPDATE jobs SET {assignments} WHERE job_id = ?", [*values, job_id])
            return _job(db, job_id)

    def set_parameters(self, job_id: str, parameters: Sequence[tuple[str, str]],
                       files: dict[str, bytes]) -> Job:
        """Add or replace parameters of a PENDING job (UWS 1.1 section 2.2.3.6): merged with
        the job's and its files replaced only once it is known to be PENDING, in the transaction
        that stores them, so a job that has left PENDING keeps what it runs with."""
        names = {name for name, _ in parameters}

        def merged_into(job: Job) -> list:
            merged = [(k, v) for k, v in job.parameters if k not in names] + list(parameters)
            for name, content in files.items():
                (self.folder(job_id) / f"part-{name}").write_bytes(content)
            return [json.dumps(merged), _run_id(merged)]
        return self._update(job_id, ("PENDING",), "changing parameters",
                            "parameters = ?, run_id = ?", merged_into)

    def set_execution_duration(self, job_id: str, seconds: int) -> Job:
        return self._update(job_id, ("PENDING",), "changing executionDuration",
                            "execution_duration = ?", [seconds])

    def set_destruction(self, job_id: str, moment: datetime) -> Job:
        return self._update(job_id, (*ACTIVE_PHASES, *FINAL_PHASES), "changing destruction",
                            "destruction = ?", [iso(moment)])

    def queue(self, job_id: str) -> Job:
        """PHASE=RUN: a PENDING job joins the queue (again-RUN of a queued job changes nothing)."""
        return self._update(job_id, ("PENDING",), "PHASE=RUN", "phase = 'QUEUED', queued_at = ?",
                            [iso(utc_now())], done=("QUEUED", "EXECUTING"))

    def abort(self, job_id: str) -> Job:
        """PHASE=ABORT: an unfinished job ends ABORTED (the runner stops it if it executes)."""
        return self._update(job_id, ACTIVE_PHASES, "PHASE=ABORT",
                            "phase = 'ABORTED', end_time = ?", [iso(utc_now())], done=("ABORTED",))

    def delete(self, job_id: str) -> None:
        """Remove the job's row, then its folder (a crash between leaves a folder the sweep
        removes, never a row without files)."""
        with self._transaction() as db:
            deleted = db.execute("DELETE FROM jobs WHERE job_id = ?", [job_id]).rowcount
        if not deleted:
            raise JobNotFound(job_id)
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def claim(self, max_running: int, owner: tuple[int, float]) -> Job | None:
        """The oldest QUEUED job, now EXECUTING for ``owner``, if fewer than ``max_running``
        jobs execute; None otherwise. The runner asks several times a second, so the write
        lock every process shares is taken only when a job waits."""
        with self._transaction(write=False) as db:
            if db.execute("SELECT 1 FROM jobs WHERE phase = 'QUEUED' LIMIT 1").fetchone() is None:
                return None
        with self._transaction() as db:
            running = db.execute("SELECT count(*) FROM jobs WHERE phase = 'EXECUTING'").fetchone()[0]
            if running >= max_running:
                return None
            row = db.execute("SELECT job_id FROM jobs WHERE phase = 'QUEUED' "
                             "ORDER BY queued_at, creation_time LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET phase = 'EXECUTING', start_time = ?, owner_pid = ?, "
                       "owner_started = ? WHERE job_id = ?",
                       [iso(utc_now()), owner[0], owner[1], row["job_id"]])
            return _job(db, row["job_id"])

    def complete(self, job_id: str, write: Callable[[Path], None], mime: str) -> None:
        """Write the result with ``write(path)`` and mark the job COMPLETED, unless it was
        aborted or deleted meanwhile (then the result is dropped)."""
        with replacing(self.result_path(job_id)) as result:
            write(result.path)
            size = result.path.stat().st_size
            with self._transaction() as db:
                row = db.execute("SELECT phase FROM jobs WHERE job_id = ?", [job_id]).fetchone()
                if row is None or row["phase"] != "EXECUTING":
                    result.discard()
                    return
                result.commit()
                db.execute("UPDATE jobs SET phase = 'COMPLETED', end_time = ?, result_mime = ?, "
                           "result_size = ? WHERE job_id = ?", [iso(utc_now()), mime, size, job_id])

    def fail(self, job_id: str, message: str) -> None:
        """Mark an EXECUTING job ERROR with ``message`` (an aborted job stays ABORTED)."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET phase = 'ERROR', end_time = ?, error = ? "
                       "WHERE job_id = ? AND phase = 'EXECUTING'", [iso(utc_now()), message, job_id])

    def phase(self, job_id: str) -> str | None:
        with self._transaction(write=False) as db:
            row = db.execute("SELECT phase FROM jobs WHERE job_id = ?", [job_id]).fetchone()
        return None if row is None else row["phase"]

    def recover(self) -> list[str]:
        """EXECUTING jobs whose process has ended become ERROR; the ids of those jobs."""
        with self._transaction() as db:
            rows = db.execute("SELECT job_id, owner_pid, owner_started FROM jobs "
                              "WHERE phase = 'EXECUTING'").fetchall()
            orphans = [r["job_id"] for r in rows if not _alive(r["owner_pid"], r["owner_started"])]
            for job_id in orphans:
                db.execute(
                    "UPDATE jobs SET phase = 'ERROR', end_time = ?, error = ? WHERE job_id = ?",
                    [iso(utc_now()), "the service stopped while this job was executing, so it "
                     "has no result; submit the query again", job_id])
        return orphans

    def destroy_expired(self, now: datetime | None = None) -> list[str]:
        """Delete jobs past their destruction time, and folders no job owns; their ids."""
        with self._transaction() as db:
            expired = [r["job_id"] for r in db.execute(
                "SELECT job_id FROM jobs WHERE destruction <= ?", [iso(now or utc_now())])]
            db.executemany("DELETE FROM jobs WHERE job_id = ?", [[j] for j in expired])
            known = {r["job_id"] for r in db.execute("SELECT job_id FROM jobs")}
        for folder in self.directory.iterdir():
            if folder.is_dir() and folder.name not in known:
                shutil.rmtree(folder, ignore_errors=True)
        return expired


def _run_id(parameters: Sequence[tuple[str, str]]) -> str | None:
    """RUNID, kept in a column of its own for the job list."""
    return next((v for k, v in parameters if k == "RUNID"), None)


def _job(db: sqlite3.Connection, job_id: str) -> Job:
    row = db.execute("SELECT * FROM jobs WHERE job_id = ?", [job_id]).fetchone()
    if row is None:
        raise JobNotFound(job_id)
    return Job.from_row(row)


def process_identity(pid: int | None = None) -> tuple[int, float]:
    """(pid, start time): unlike a pid alone, never shared by a later process."""
    process = psutil.Process(pid)
    return process.pid, process.create_time()


def _alive(pid: int | None, started: float | None) -> bool:
    try:
        return pid is not None and process_identity(pid) == (pid, started)
    except psutil.Error:
        return False


class JobRunner:
    """Runs the jobs this process claims, on at most ``max_running`` threads.

    ``execute(job, stop)`` does the work of one job and records its outcome in the store; it
    must return promptly once ``stop`` is set (the job was aborted or deleted).
    """

    POLL_SECONDS = 0.2

    def __init__(self, store: JobStore, max_running: int,
                 execute: Callable[[Job, threading.Event], None],
                 sweep_seconds: float = 30.0) -> None:
        self.store = store
        self.max_running = max_running
        self.sweep_seconds = sweep_seconds
        self.execute = execute
        self.owner = process_identity()
        self._wake = threading.Event()
        self._running: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="vo-ml-jobs", daemon=True)

    def start(self) -> JobRunner:
        self.store.recover()
        self.store.destroy_expired()
        self._thread.start()
        return self

    def wake(self) -> None:
        """Look for queued jobs now rather than at the next poll."""
        self._wake.set()

    def _loop(self) -> None:
        last_sweep = time.monotonic()
        while True:
            self._wake.wait(self.POLL_SECONDS)
            self._wake.clear()
            try:
                self._stop_aborted()
                self._claim_all()
                if time.monotonic() - last_sweep > self.sweep_seconds:
                    last_sweep = time.monotonic()
                    self.store.recover()
                    self.store.destroy_expired()
            except Exception:
                log.exception("the async job runner failed a round; it carries on")

    def _claim_all(self) -> None:
        while len(self._running) < self.max_running:
            job = self.store.claim(self.max_running, self.owner)
            if job is None:
                return
            stop = threading.Event()
            with self._lock:
                self._running[job.job_id] = stop
            threading.Thread(target=self._run, args=(job, stop), name=f"vo-ml-job-{job.job_id}",
                             daemon=True).start()

    def _stop_aborted(self) -> None:
        with self._lock:
            running = dict(self._running)
        for job_id, stop in running.items():
            if self.store.phase(job_id) != "EXECUTING":
                stop.set()

    def _run(self, job: Job, stop: threading.Event) -> None:
        try:
            self.execute(job, stop)
        except Exception:
            log.exception("async job %s failed", job.job_id)
            self.store.fail(job.job_id, "internal error while running the job; the service "
                                        "log has the details")
        finally:
            with self._lock:
                self._running.pop(job.job_id, None)
            self._wake.set()


def retention(days: float) -> datetime:
    return utc_now() + timedelta(days=days)
