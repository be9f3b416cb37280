"""Ingest, train and embed on real MILES spectra, into a real DuckDB file."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MILES, TABLE, TAU_CETI, quick_model_config

from vo_ml.archive.duckdb_backend import DuckDBBackend
from vo_ml.pipeline import ArchiveConfig, embed, ingest, store_path, train_model
from vo_ml.resources import config_file, load_yaml
from vo_ml.spectra.miles import MilesDescriber
from vo_ml.spectra.record import der_snr
from vo_ml.spectra.store import SpectrumStore


def _query(db, sql, parameters=None):
    backend = DuckDBBackend(db, read_only=True)
    try:
        return backend.execute(sql, parameters).rows()
    finally:
        backend.close()


def test_every_good_file_becomes_one_row_and_one_stored_spectrum(archive):
    summary = archive["summary"]
    good = len(archive["files"]) - 1
    assert summary.ingested == good
    rows = _query(archive["db"], f"SELECT count(*), count(DISTINCT obs_publisher_did) FROM {TABLE}")
    assert rows == [(good, good)]
    store = SpectrumStore(store_path(archive["db"], TABLE))
    assert len(store) == good
    assert sorted(store.dids) == sorted(r[0] for r in _query(
        archive["db"], f"SELECT obs_publisher_did FROM {TABLE}"))


def test_the_bad_file_is_reported_with_its_reason_and_skipped(archive):
    failed = archive["summary"].failed
    assert len(failed) == 1
    path, reason = failed[0]
    assert path.endswith("m9999V.fits") and "not a FITS file" in reason
    report = _query(archive["db"], "SELECT path, reason FROM vo_ml.ingest_report")
    assert report == [(path, reason)]


def test_rows_carry_obscore_values_and_catalogue_labels(archive):
    (row,) = _query(archive["db"], f"""
        SELECT obs_publisher_did, obs_id, target_name, s_ra, em_min, em_max, em_res_power,
               dataproduct_type, calib_level, obs_collection, teff, logg, feh
        FROM {TABLE} WHERE obs_id = 'm0067'""")
    assert row[:4] == ("ivo://vo-ml.example/miles?m0067", "m0067", "HD010700", None)
    assert np.isclose(row[4], 3540.5e-10) and np.isclose(row[5], (3540.5 + 0.9 * 4299) * 1e-10)
    assert 2000 < row[6] < 2300
    assert row[7:] == ("spectrum", 2, "MILES", 5264.0, 4.36, -0.5)


def test_ml_columns_are_written_for_every_row_by_the_trained_model(archive):
    model_id = archive["model_dir"].name
    rows = _query(archive["db"], f"""
        SELECT count(*), count(embedding), count(ml_x), count(ml_recon_error),
               min(ml_recon_error), max(ml_recon_error), count(DISTINCT ml_model), any_value(ml_model)
        FROM {TABLE}""")
    total, embeddings, xs, errors, low, high, models, model = rows[0]
    assert total == embeddings == xs == errors
    assert 0 < low < high < 1
    assert (models, model) == (1, model_id)
    (column,) = _query(archive["db"], "SELECT arraysize, description FROM TAP_SCHEMA.columns "
                                      "WHERE column_name = 'embedding'")
    assert column[0] == "16" and model_id in column[1]


def test_latent_neighbours_share_temperatures_far_better_than_chance(archive):
    rows = _query(archive["db"], f"SELECT teff, embedding FROM {TABLE} WHERE teff IS NOT NULL")
    teff = np.array([r[0] for r in rows])
    latent = np.array([r[1] for r in rows])
    distances = np.linalg.norm(latent[:, None] - latent[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    neighbours = np.argsort(distances, axis=1)[:, :5]
    neighbour_error = np.median(np.abs(teff[neighbours] - teff[:, None]) / teff[:, None])
    random_error = np.median(np.abs(teff[None] - teff[:, None]) / teff[:, None])
    assert neighbour_error < random_error / 3


def test_a_second_run_reuses_everything(archive, miles_sources):
    db = archive["db"]
    again = ingest(archive["files"], db, archive["config"], MilesDescriber(miles_sources))
    assert again.ingested == 0 and again.skipped == len(archive["files"]) - 1
    assert train_model(db, TABLE, quick_model_config(), archive["workdir"] / "models") \
        == archive["model_dir"]
    assert archive["embedded"] is True
    assert embed(db, TABLE, archive["model_dir"]) is False
    assert _query(db, f"SELECT count(*) FROM {TABLE}")[0][0] == archive["summary"].ingested


def test_copies_of_a_file_are_skipped_and_a_second_table_still_gets_them(tmp_path, archive):
    sources = tmp_path / "sources"
    sources.mkdir()
    original = archive["files"][0]
    for name in ("MILES_res2.50_star_m0001V.fits", "copy_of_m0001.fits"):
        (sources / name).write_bytes(original.read_bytes())
    db = tmp_path / "copies.duckdb"
    files = sorted(sources.iterdir())
    summary = ingest(files, db, archive["config"], files_per_batch=1, workers=1)
    assert (summary.ingested, summary.skipped, summary.failed) == (1, 1, [])
    again = ingest(files, db, archive["config"], workers=1)
    assert (again.ingested, again.skipped) == (0, 2)
    harps = type(archive["config"])(**{**archive["config"].__dict__, "table": "harps.spectra",
                                       "did_prefix": "ivo://vo-ml.example/harps?"})
    other = ingest(files, db, harps, workers=1)
    assert (other.ingested, other.skipped) == (1, 1)


def test_an_archive_is_servable_as_soon_as_ingest_has_started(tmp_path, archive):
    """TAP_SCHEMA is published before the first batch, so even an ingest of nothing but bad
    files (or one killed in its first batch) leaves a database the service can open."""
    bad = tmp_path / "bad.fits"
    bad.write_text("not FITS")
    db = tmp_path / "early.duckdb"
    summary = ingest([bad], db, archive["config"], workers=1)
    assert summary.ingested == 0 and len(summary.failed) == 1
    backend = DuckDBBackend(db, read_only=True)
    try:
        assert backend.read_tap_schema().table(TABLE) is not None
    finally:
        backend.close()


def test_an_own_table_stays_published_when_another_table_is_ingested(tmp_path):
    """Tables no tap_schema file names are described again by every later publication."""
    db = tmp_path / "two.duckdb"
    generic = ArchiveConfig.from_dict(load_yaml(config_file("generic")) | {"table": "own.spectra"})
    assert (generic.collection, generic.did_prefix) == ("own", "ivo://vo-ml.example/own.spectra?")
    files = sorted(MILES.glob("*.fits"))[:2]
    assert ingest(files[:1], db, generic, workers=1).ingested == 1
    miles = ArchiveConfig.from_dict(load_yaml(config_file("miles")))
    assert ingest(files[1:], db, miles, workers=1).ingested == 1
    tables = dict(_query(db, "SELECT table_name, description FROM TAP_SCHEMA.tables"))
    assert "One row per spectrum" in tables["own.spectra"] and TABLE in tables
    assert _query(db, "SELECT obs_collection, count(*) FROM ivoa.obscore GROUP BY ALL ORDER BY 1") \
        == [("MILES", 1), ("own", 1)]


def test_der_snr_measures_white_noise_on_a_sloping_continuum():
    """The case DER_SNR is built for (Stoehr et al. 2008): Gaussian noise of sigma 2 on a
    continuum with median 100 has S/N 50 per pixel; a straight-line slope does not change it,
    masked (NaN) pixels are left out, and a flat spectrum without noise has no estimate."""
    continuum = np.linspace(50.0, 150.0, 200_000)
    noisy = continuum + np.random.default_rng(2008).normal(0.0, 2.0, continuum.size)
    assert der_snr(noisy) == pytest.approx(50.0, rel=0.01)
    noisy[::7] = np.nan
    assert der_snr(noisy) == pytest.approx(50.0, rel=0.01)
    assert der_snr(np.full(100, 3.0)) is None and der_snr(np.ones(4)) is None


def test_rows_say_where_and_what_their_file_is_and_estimate_its_snr(archive):
    """MILES files state no S/N: every row gets the DER_SNR estimate, so "snr > 50" finds stars."""
    rows = _query(archive["db"], f"""
        SELECT count(*), count(snr), count(*) FILTER (WHERE snr > 50),
               count(*) FILTER (WHERE access_format = 'application/fits') FROM {TABLE}""")
    total, with_snr, good, fits = rows[0]
    assert total == with_snr == fits and 0 < good < total
    (url,) = _query(archive["db"], f"SELECT access_url FROM {TABLE} WHERE obs_publisher_did = ?",
                    [TAU_CETI])[0]
    assert url == "/ssa/data?ID=ivo%3A%2F%2Fvo-ml.example%2Fmiles%3Fm0067"


@pytest.mark.parametrize("name", ["spectra", "my archive.spectra", "a.b.c", "1st.spectra"])
def test_a_table_name_adql_cannot_reach_unquoted_is_refused_with_the_form_to_use(name):
    with pytest.raises(ValueError, match="name it SCHEMA.TABLE"):
        ArchiveConfig.from_dict(load_yaml(config_file("generic")) | {"table": name})
