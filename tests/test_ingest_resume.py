"""A SIGKILLed ingest, restarted, ends with exactly the rows and spectra of an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal

import numpy as np
import psutil
from conftest import MILES, TABLE, VO_ML, Child, run

from vo_ml.archive.duckdb_backend import DuckDBBackend
from vo_ml.pipeline import store_path
from vo_ml.spectra.store import SpectrumStore

BATCH = "4"
CATALOGUE = ("obs_publisher_did, obs_id, target_name, em_min, em_max, em_res_power, teff, logg, "
             "feh, calib_level, obs_collection")


def _ingest_command(sources, db):
    return [VO_ML, "ingest", str(sources), "--db", str(db), "--config", "miles", "--batch-size", BATCH]


def _stored_rows(store_folder) -> int:
    metadata = store_folder / "did" / "zarr.json"
    return json.loads(metadata.read_text())["shape"][0] if metadata.exists() else 0


def _kill_after(sources, db, rows):
    """Start an ingest and SIGKILL it once the store holds at least ``rows`` spectra."""
    folder = store_path(db, TABLE)
    with Child(_ingest_command(sources, db), db.with_suffix(f".{rows}.log")) as process:
        process.wait_until(lambda: _stored_rows(folder) >= rows, f"{rows} spectra in the store", 120)
        workers = psutil.Process(process.pid).children(recursive=True)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, "a killed ingest left worker processes behind"


def _snapshot(db):
    backend = DuckDBBackend(db, read_only=True)
    try:
        rows = sorted(backend.execute(f"SELECT {CATALOGUE} FROM {TABLE}").rows())
        ingested = backend.execute("SELECT count(*), count(DISTINCT checksum) "
                                   "FROM vo_ml.ingested").rows()[0]
    finally:
        backend.close()
    store = SpectrumStore(store_path(db, TABLE))
    dids = list(store.dids)
    flux, mask = store.read(0, len(store))
    spectra = {did: (flux[i], mask[i]) for i, did in enumerate(dids)}
    return rows, ingested, dids, spectra


def test_killed_and_restarted_ingest_matches_an_uninterrupted_one(tmp_path):
    sources = tmp_path / "sources"
    sources.mkdir()
    for item in MILES.iterdir():
        shutil.copy(item, sources / item.name)

    reference_db = tmp_path / "reference.duckdb"
    run(_ingest_command(sources, reference_db), check=True)
    reference_rows, reference_ingested, reference_dids, reference_spectra = _snapshot(reference_db)

    db = tmp_path / "killed.duckdb"
    _kill_after(sources, db, rows=12)
    _kill_after(sources, db, rows=48)
    run(_ingest_command(sources, db), check=True)
    rows, ingested, dids, spectra = _snapshot(db)

    assert rows == reference_rows
    assert ingested == reference_ingested == (len(reference_rows), len(reference_rows))
    assert len(dids) == len(set(dids)) == len(reference_dids)
    assert set(dids) == set(reference_dids) == {r[0] for r in rows}
    for did, (flux, mask) in reference_spectra.items():
        assert np.array_equal(spectra[did][0], flux) and np.array_equal(spectra[did][1], mask)
