"""Batch embedding with Dask: threads, a real local cluster of worker processes, projections for
latent spaces that are not 2-D, and column swaps that concurrent readers never see half done."""

from __future__ import annotations

import json
import threading

import duckdb
import numpy as np
import pytest
from conftest import TABLE, vo_ml
from test_training import copy_archive

from vo_ml.archive.duckdb_backend import DuckDBBackend
from vo_ml.pipeline import embed, store_path, train_model
from vo_ml.resources import config_file, load_yaml
from vo_ml.spectra.store import SpectrumStore


@pytest.fixture(scope="module")
def conv_archive(archive, tmp_path_factory) -> dict:
    """A copy of the session archive, embedded by a briefly trained conv model of 8 dimensions."""
    db = copy_archive(archive, tmp_path_factory.mktemp("conv"))
    config = load_yaml(config_file("conv")) | {"latent_dim": 8}
    config["training"].update(epochs=2, batch_size=32)
    model = train_model(db, TABLE, config, db.parent / "models")
    assert embed(db, TABLE, model) is True
    return {"db": db, "model": model}


def _rows(db, sql: str) -> list[tuple]:
    backend = DuckDBBackend(db, read_only=True)
    try:
        return backend.execute(sql).rows()
    finally:
        backend.close()


def test_a_local_cluster_of_two_processes_loads_the_model_once_each_and_agrees(archive):
    from dask.distributed import Client, LocalCluster

    from vo_ml.ml.embedding import embed_store

    store = SpectrumStore(store_path(archive["db"], TABLE))
    threaded = embed_store(store, archive["model_dir"])
    with (LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                       dashboard_address=None) as cluster, Client(cluster) as client):
        distributed = embed_store(store, archive["model_dir"], scheduler=cluster.scheduler_address)

        def loads() -> tuple[int, int]:
            from vo_ml.ml.embedding import _load_model_once

            info = _load_model_once.cache_info()
            return info.misses, info.hits

        per_worker = client.run(loads)
    assert len(per_worker) == 2
    misses = [m for m, _ in per_worker.values()]
    tasks = sum(m + h for m, h in per_worker.values())
    assert all(m <= 1 for m in misses) and sum(misses) >= 1  # at most once per worker...
    assert tasks >= 4 and tasks - sum(misses) >= 2  # ...and reused for its later chunks
    np.testing.assert_array_equal(distributed.dids, threaded.dids)
    np.testing.assert_allclose(distributed.latent, threaded.latent, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(distributed.recon_error, threaded.recon_error, rtol=1e-5)


def test_vo_ml_embed_workers_starts_its_own_cluster(archive, tmp_path):
    db = copy_archive(archive, tmp_path)
    before = _rows(db, f"SELECT obs_publisher_did, embedding FROM {TABLE} ORDER BY 1")
    with duckdb.connect(str(db)) as connection:  # rows ingested since the last embedding
        connection.execute("UPDATE miles.miles.spectra SET embedding = NULL WHERE obs_id LIKE '%m00%'")
        assert connection.sql("SELECT count(*) FROM miles.miles.spectra "
                              "WHERE embedding IS NULL").fetchall()[0][0] > 5
    done = vo_ml("embed", "--db", db, "--model", archive["model_dir"], "--workers", 2)
    assert done.returncode == 0, done.stderr
    assert "wrote the ML columns" in done.stdout
    assert ": 2 Dask workers" in done.stderr  # its own cluster ran the tasks
    after = _rows(db, f"SELECT obs_publisher_did, embedding FROM {TABLE} ORDER BY 1")
    assert [r[0] for r in after] == [r[0] for r in before]
    np.testing.assert_allclose(np.array([r[1] for r in after]), np.array([r[1] for r in before]),
                               rtol=1e-5, atol=1e-6)


def test_a_latent_space_of_eight_dimensions_is_mapped_by_its_saved_projection(conv_archive):
    model = conv_archive["model"]
    card = json.loads((model / "model_card.json").read_text())
    assert card["latent_dim"] == 8 and card["projection"]["method"] == "pca"
    rows = _rows(conv_archive["db"], f"SELECT embedding, ml_x, ml_y, ml_model FROM {TABLE}")
    latent = np.array([r[0] for r in rows])
    assert latent.shape[1] == 8 and {r[3] for r in rows} == {model.name}
    with np.load(model / card["projection"]["file"]) as saved:
        expected = (latent - saved["mean"]) @ saved["components"].T
    np.testing.assert_allclose(np.array([r[1:3] for r in rows], dtype=float), expected,
                               rtol=1e-4, atol=1e-5)
    (column,) = _rows(conv_archive["db"], "SELECT arraysize, description FROM TAP_SCHEMA.columns "
                                          "WHERE column_name = 'embedding'")
    assert column[0] == "8" and model.name in column[1]


def test_a_new_model_replaces_the_columns_at_once_for_concurrent_readers(archive, conv_archive):
    """Readers on their own cursors, while the columns of another model are swapped in, see
    every row of the old model or every row of the new one, never a mixture or a gap."""
    from vo_ml.archive import tap_schema
    from vo_ml.archive.backend import MlColumns
    from vo_ml.ml.embedding import embed_store

    new = embed_store(SpectrumStore(store_path(conv_archive["db"], TABLE)), archive["model_dir"])
    backend = DuckDBBackend(conv_archive["db"])
    seen: list[tuple] = []
    errors: list[BaseException] = []
    done, reading = threading.Event(), threading.Event()
    state = (f"SELECT count(*), count(embedding), count(DISTINCT ml_model), min(ml_model), "
             f"min(len(embedding)), max(len(embedding)) FROM {TABLE}")

    def read() -> None:
        cursor = backend.cursor()
        while not done.is_set():
            try:
                seen.append(cursor.sql(state).fetchall()[0])
            except Exception as error:  # noqa: BLE001  (any failure is the test's finding)
                errors.append(error)
                return
            reading.set()

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        assert reading.wait(60)
        backend.write_ml_columns(tap_schema.load().table(TABLE), MlColumns(
            new.model_id, new.dids, new.latent, new.map_xy, new.recon_error, new.card))
        after = backend.cursor().sql(state).fetchall()[0]
    finally:
        done.set()
        for reader in readers:
            reader.join()
        backend.close()
    assert not errors, errors
    dimensions = new.latent.shape[1]
    old, new_state = (conv_archive["model"].name, 8, 8), (archive["model_dir"].name, dimensions, dimensions)
    states = {(model, low, high) for total, count, models, model, low, high in seen}
    assert all(total == count and models == 1 for total, count, models, *_ in seen)
    assert old in states and states <= {old, new_state}
    assert after[3:] == new_state
