"""Latent-space similarity through the service's routes, against brute-force numpy on the MILES
embeddings (pyvo reads them from the session's server; concurrency is tested on a server too).

The archive has the neighbour index `vo-ml embed` builds, so ``TOP k ... ORDER BY
ml_distance`` runs on index candidates re-ranked exactly; every answer is compared with the
distances numpy computes over all embeddings the service publishes.
"""

from __future__ import annotations

import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import pytest
import requests
from astropy import units as u
from astropy.io import fits
from astropy.io.votable import from_table, parse
from astropy.table import Table
from conftest import DATA, MILES, TABLE, TAU_CETI, copy_archive, serving, vo_ml
from flask.testing import FlaskClient
from werkzeug.test import TestResponse


@pytest.fixture(scope="module")
def embeddings(service) -> Table:
    """Every row with its embedding and the labels the filters use."""
    table = service.search(f"SELECT obs_publisher_did, obs_id, teff, embedding FROM {TABLE}",
                           maxrec=10000).to_table()
    return table[~np.ma.getmaskarray(table["embedding"]).any(axis=1)]


def brute_force(embeddings: Table, reference: np.ndarray, metric: str = "l2") -> np.ndarray:
    vectors = np.asarray(embeddings["embedding"], dtype=np.float64)
    if metric == "cosine":
        return 1 - vectors @ reference / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference))
    return np.linalg.norm(vectors - reference, axis=1)


def _vector_of(embeddings: Table, did: str) -> np.ndarray:
    return np.asarray(embeddings["embedding"][list(embeddings["obs_publisher_did"]).index(did)],
                      dtype=np.float64)


def _app(db: Path, **settings: str) -> FlaskClient:
    """The test client of the service on ``db``: a route-level test needs no server."""
    from vo_ml.service import create_app

    return create_app({"ARCHIVE_DB": str(db), **settings}).test_client()


def _result(document: bytes) -> tuple[Table, str]:
    """The rows of a result document, and the plan the service says it used."""
    votable = parse(io.BytesIO(document))
    plan = next(i.value for i in votable.resources[0].infos if i.name == "vo_ml_plan")
    return votable.get_first_table().to_table(), plan


def _answer(response: TestResponse) -> tuple[Table, str]:
    """The result of a query that must have succeeded, and the plan the service says it used."""
    assert response.status_code == 200, response.text
    return _result(response.data)


def _post(client: FlaskClient, query: str, **params: object) -> TestResponse:
    return client.post("/tap/sync", data={"LANG": "ADQL", "QUERY": query, **params})


def _sync(client: FlaskClient, query: str, **params: str) -> tuple[Table, str]:
    return _answer(_post(client, query, **params))


def _rows(client: FlaskClient, query: str) -> Table:
    """Every row of a query that names no plan."""
    response = _post(client, query, MAXREC="100000")
    assert response.status_code == 200, response.text
    return parse(io.BytesIO(response.data)).get_first_table().to_table()


def _assert_nearest(result: Table, candidates: Table, distances: np.ndarray, k: int) -> None:
    """The result holds the k smallest distances, in order; rows tied at the k-th may differ."""
    expected = np.sort(distances)[:k]
    np.testing.assert_allclose(np.asarray(result["d"]), expected, rtol=1e-5, atol=1e-6)
    by_did = dict(zip(candidates["obs_publisher_did"], distances, strict=True))
    np.testing.assert_allclose([by_did[d] for d in result["obs_publisher_did"]], result["d"],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["auto", "exact"])
def test_top_k_matches_brute_force_with_the_plan_named(client, embeddings, mode):
    result, plan = _sync(client, f"SELECT TOP 10 obs_publisher_did, ml_distance(embedding, "
                                  f"'{TAU_CETI}') AS d FROM {TABLE} ORDER BY d", ML_SEARCH=mode)
    _assert_nearest(result, embeddings, brute_force(embeddings, _vector_of(embeddings, TAU_CETI)), 10)
    assert result["obs_publisher_did"][0] == TAU_CETI
    assert plan.startswith("approximate: 91 candidates near the reference from the HNSW index"
                           if mode == "auto"
                           else "exact: every row")


def test_a_filter_on_fewer_rows_than_the_first_candidates_ranks_every_row(client, embeddings):
    """The first candidates (at least 100) are more than the 91 rows: all of them, no widening."""
    result, plan = _sync(client, f"SELECT TOP 5 obs_publisher_did, ml_distance(embedding, "
                                  f"'{TAU_CETI}') AS d FROM {TABLE} WHERE teff > 7000 ORDER BY d")
    hot = embeddings[np.asarray(embeddings["teff"]) > 7000]
    assert len(result) == 5
    _assert_nearest(result, hot, brute_force(hot, _vector_of(embeddings, TAU_CETI)), 5)
    assert plan.startswith("approximate: 91 candidates near the reference from the HNSW index")
    assert "re-ranked by the exact distance" in plan


def test_reference_keys_are_indexed_as_tap_schema_says(archive):
    with duckdb.connect(str(archive["db"]), read_only=True) as connection:
        indexed = {row[0] for row in connection.execute(
            "SELECT column_name FROM TAP_SCHEMA.columns WHERE table_name = ? AND indexed = 1",
            [TABLE]).fetchall()}
        definitions = " ".join(row[0] for row in connection.execute(
            "SELECT sql FROM duckdb_indexes() WHERE schema_name = 'miles' "
            "AND table_name = 'spectra'").fetchall())
    assert indexed == {"obs_publisher_did", "obs_id"}
    assert all(f"({column})" in definitions for column in indexed)


def test_obs_id_and_written_vectors_are_references_too(client, embeddings):
    row = list(embeddings["obs_publisher_did"]).index(TAU_CETI)
    vector = np.asarray(embeddings["embedding"][row], dtype=np.float64)
    written = " ".join(repr(float(x)) for x in np.asarray(embeddings["embedding"][row]))
    by_obs_id, _ = _sync(client, f"SELECT TOP 3 obs_publisher_did, ml_distance(embedding, "
                                  f"'{embeddings['obs_id'][row]}') AS d FROM {TABLE} ORDER BY d")
    by_vector, _ = _sync(client, f"SELECT TOP 3 obs_publisher_did, ml_distance(embedding, "
                                  f"ml_vector('{written}')) AS d FROM {TABLE} ORDER BY d")
    distances = brute_force(embeddings, vector)
    _assert_nearest(by_obs_id, embeddings, distances, 3)
    _assert_nearest(by_vector, embeddings, distances, 3)


def test_cosine_distance_without_its_index_is_exact_and_says_so(client, embeddings):
    result, plan = _sync(client, f"SELECT TOP 7 obs_publisher_did, ml_cosine_distance(embedding, "
                                  f"'{TAU_CETI}') AS d FROM {TABLE} ORDER BY d")
    _assert_nearest(result, embeddings,
                    brute_force(embeddings, _vector_of(embeddings, TAU_CETI), "cosine"), 7)
    assert plan.startswith("exact") and "no up-to-date cosine neighbour index" in plan


def test_an_uploaded_embedding_is_a_reference_in_a_join(service, embeddings):
    mine = Table({"name": ["a", "b"], "vec": np.asarray(embeddings["embedding"][:2])})
    result = service.search(
        f"SELECT u.name, s.obs_publisher_did, ml_distance(s.embedding, u.vec) AS d "
        f"FROM {TABLE} AS s, TAP_UPLOAD.mine AS u WHERE s.embedding IS NOT NULL "
        "ORDER BY u.name, d", uploads={"mine": mine}, maxrec=10000).to_table()
    for name, vector in zip(mine["name"], mine["vec"], strict=True):
        rows = result[result["name"] == name]
        np.testing.assert_allclose(np.asarray(rows["d"]),
                                   np.sort(brute_force(embeddings, np.asarray(vector))), atol=1e-5)


@pytest.mark.parametrize(("query", "fragment"), [
    (f"SELECT TOP 3 ml_distance(embedding, 'nobody') AS d FROM {TABLE} ORDER BY d",
     "no row of miles.spectra has obs_publisher_did or obs_id 'nobody'"),
    (f"SELECT TOP 3 ml_distance(embedding, ml_vector('1 2 3')) AS d FROM {TABLE} ORDER BY d",
     "dimension mismatch"),
])
def test_similarity_errors_are_dali_documents(client, query, fragment):
    response = _post(client, query)
    assert response.status_code == 400 and fragment in response.text


# --- references uploaded with the query: embeddings, and spectra through ml_encode ----------

HELD_OUT = DATA / "miles_held_out"


def _spectra(*paths: Path) -> Table:
    """Spectra as a user uploads them: one row each, wavelength (Angstrom) and flux arrays."""
    rows = []
    for path in paths:
        with fits.open(path) as hdus:
            header, flux = hdus[0].header, np.asarray(hdus[0].data, dtype=np.float64).ravel()
        pixels = np.arange(flux.size) + 1 - header.get("CRPIX1", 1)
        rows.append((path.stem, header["CRVAL1"] + header["CDELT1"] * pixels, flux))
    table = Table({"name": [r[0] for r in rows], "wavelength": np.stack([r[1] for r in rows]),
                   "flux": np.stack([r[2] for r in rows])})
    table["wavelength"].unit = u.AA
    return table


def _upload(client: FlaskClient, query: str, table: Table, **params: str) -> TestResponse:
    """A sync query with ``table`` uploaded as TAP_UPLOAD.mine (read a success with
    :func:`_answer`)."""
    document = io.BytesIO()
    from_table(table).to_xml(document)
    document.seek(0)
    return _post(client, query, UPLOAD="mine,param:spectra", spectra=(document, "mine.xml"),
                 **params)


LIKE_MINE = (f"SELECT TOP {{k}} s.obs_publisher_did, s.teff, s.logg, ml_distance(s.embedding, "
             f"ml_encode(u.wavelength, u.flux)) AS d FROM {TABLE} AS s, TAP_UPLOAD.mine AS u "
             "ORDER BY d")


@pytest.mark.parametrize(("star", "teff", "logg"), [("m0807", 4634, 2.57), ("m0416", 5401, 4.60)])
def test_a_held_out_star_finds_archive_stars_of_its_kind(client, archive, embeddings, star,
                                                         teff, logg):
    from vo_ml.ml.embedding import latent_vectors
    from vo_ml.spectra.readers import read_spectrum

    path = HELD_OUT / f"MILES_res2.50_star_{star}V.fits"
    result, plan = _answer(_upload(client, LIKE_MINE.format(k=5), _spectra(path)))
    assert plan.startswith("approximate") and "near the reference" in plan
    # The same star through the ingest reader and the archive's preprocessing, encoded here.
    flux, mask = archive["config"].preprocessing.apply(read_spectrum(path))
    vector = latent_vectors(flux[None], mask[None], archive["model_dir"])[0]
    _assert_nearest(result, embeddings, brute_force(embeddings, vector.astype(np.float64)), 5)
    # Stars without labels may be among the neighbours: the labelled ones are compared.
    assert abs(np.nanmedian(np.ma.filled(result["teff"], np.nan)) - teff) < 300
    assert abs(np.nanmedian(np.ma.filled(result["logg"], np.nan)) - logg) < 0.6


def test_an_archive_spectrum_uploaded_is_its_own_nearest_row(client):
    tau_ceti = _spectra(MILES / "MILES_res2.50_star_m0067V.fits")
    tau_ceti["wavelength"] = tau_ceti["wavelength"].to(u.nm)
    result, _ = _answer(_upload(client, LIKE_MINE.format(k=1), tau_ceti))
    assert result["obs_publisher_did"][0] == TAU_CETI and result["d"][0] < 1e-4


def _pairs(embeddings: Table, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reference number, row number) of every pair, and their distances, nearest first."""
    distances = np.stack([brute_force(embeddings, r) for r in references])
    order = np.argsort(distances, axis=None, kind="stable")
    return np.stack(np.unravel_index(order, distances.shape), axis=1), distances.ravel()[order]


@pytest.mark.parametrize("mode", ["auto", "exact"])
def test_nearest_pairs_to_many_uploaded_references(client, embeddings, mode):
    references = np.asarray(embeddings["embedding"][[5, 40, 77]], dtype=np.float64)
    mine = Table({"name": ["a", "b", "c"], "vec": references.astype(np.float32)})
    result, plan = _answer(_upload(client, f"SELECT TOP 12 u.name, s.obs_publisher_did, "
                                            f"ml_distance(s.embedding, u.vec) AS d FROM {TABLE} "
                                            "AS s JOIN TAP_UPLOAD.mine AS u ON s.teff > 4000 "
                                            "ORDER BY d", mine, ML_SEARCH=mode))
    warm = np.asarray(np.ma.filled(embeddings["teff"], 0)) > 4000
    _, distances = _pairs(embeddings[warm], references)
    np.testing.assert_allclose(np.asarray(result["d"]), distances[:12], rtol=1e-5, atol=1e-6)
    assert plan.startswith("approximate: ") == (mode == "auto")


def test_a_latent_cone_is_every_row_within_the_radius(client, embeddings):
    """A small cone, so that it stays below the share of the table that goes exact."""
    distances = brute_force(embeddings, _vector_of(embeddings, TAU_CETI))
    radius = float(np.sort(distances)[5]) + 1e-4
    result, plan = _sync(client, f"SELECT obs_publisher_did, ml_distance(embedding, "
                                  f"'{TAU_CETI}') AS d FROM {TABLE} WHERE teff > 5000 AND "
                                  f"ml_distance(embedding, '{TAU_CETI}') < {radius} ORDER BY d")
    inside = (distances < radius) & (np.ma.filled(embeddings["teff"], 0) > 5000)
    assert sorted(result["obs_publisher_did"]) == sorted(embeddings["obs_publisher_did"][inside])
    assert plan.startswith("latent cone: ")


def test_a_radius_join_against_uploaded_references(client, embeddings):
    references = np.asarray(embeddings["embedding"][[3, 30, 60, 90]], dtype=np.float64)
    pairs, distances = _pairs(embeddings, references)
    radius = float(distances[6]) + 1e-4
    mine = Table({"name": ["a", "b", "c", "d"], "vec": references.astype(np.float32)})
    query = (f"SELECT u.name, s.obs_publisher_did FROM {TABLE} AS s JOIN TAP_UPLOAD.mine AS u "
             f"ON {radius} >= ml_distance(s.embedding, u.vec)")
    expected = sorted((str(mine["name"][i]), str(embeddings["obs_publisher_did"][j]))
                      for i, j in pairs[distances <= radius])
    for mode, kind in (("auto", "latent cone: "), ("exact", "exact: ")):
        result, plan = _answer(_upload(client, query, mine, ML_SEARCH=mode))
        assert sorted(zip(result["name"], result["obs_publisher_did"], strict=True)) == expected
        assert plan.startswith(kind)


@pytest.mark.parametrize(("query", "fragment"), [
    (f"SELECT TOP 3 ml_distance(embedding, ml_encode(embedding, embedding)) AS d FROM {TABLE} "
     "ORDER BY d", "must be array columns of one TAP_UPLOAD table"),
    ("SELECT ml_encode(wavelength, flux) FROM TAP_UPLOAD.mine", "as the second argument of"),
    (f"SELECT TOP 3 ml_distance(s.embedding, ml_encode(u.name, u.flux)) AS d FROM {TABLE} AS s, "
     "TAP_UPLOAD.mine AS u ORDER BY d", "must be array columns"),
])
def test_ml_encode_errors_name_the_problem(client, query, fragment):
    response = _upload(client, query, _spectra(HELD_OUT / "MILES_res2.50_star_m0807V.fits"))
    assert response.status_code == 400 and "ADQL-E06" in response.text
    assert fragment in response.text


def test_uploaded_wavelengths_must_be_a_length(client):
    spectra = _spectra(HELD_OUT / "MILES_res2.50_star_m0807V.fits")
    spectra["wavelength"].unit = u.s
    response = _upload(client, LIKE_MINE.format(k=3), spectra)
    assert response.status_code == 400 and "is not a length" in response.text


# --- archives changed after they were indexed ------------------------------------------------


def _copy_archive(archive: dict, folder: Path, edit: str, parameters: list | None = None) -> Path:
    """A copy of the session's archive and its index, with ``edit`` run on it."""
    db = copy_archive(archive, folder, index=True)
    with duckdb.connect() as connection:
        connection.execute("ATTACH ? AS archive", [str(db)])
        connection.execute("USE archive")
        connection.execute(edit, parameters or [])
    return db


TIES_AND_NULLS = (f"UPDATE {TABLE} SET embedding = CASE WHEN obs_id = 'm0082' THEN NULL ELSE "
                  f"(SELECT embedding FROM {TABLE} WHERE obs_publisher_did = ?) END "
                  "WHERE obs_id IN ('m0082', 'm0322', 'm0353')")


@pytest.fixture(scope="module")
def edited(archive, tmp_path_factory) -> dict:
    """Served copies: one with ties and a NULL embedding, indexed again with `vo-ml index`, and
    one with the same edit after its index was built (stale)."""
    reindexed = _copy_archive(archive, tmp_path_factory.mktemp("ties"), TIES_AND_NULLS, [TAU_CETI])
    vo_ml("index", "--db", reindexed, "--table", TABLE, check=True)
    stale = _copy_archive(archive, tmp_path_factory.mktemp("stale"), TIES_AND_NULLS, [TAU_CETI])
    return {"fresh": _app(reindexed), "stale": _app(stale)}


@pytest.mark.parametrize(("served", "mode", "kind"), [
    ("fresh", "auto", "approximate: "), ("fresh", "exact", "exact: "),
    ("stale", "auto", "exact: every row of miles.spectra with a embedding compared; no up-to-date"),
])
def test_ties_and_rows_without_embedding_after_an_edit(edited, served, mode, kind):
    client = edited[served]
    current = _rows(client, f"SELECT obs_publisher_did, embedding FROM {TABLE} "
                            "WHERE embedding IS NOT NULL")
    assert len(current) == 90
    result, plan = _sync(client, f"SELECT TOP 6 obs_publisher_did, ml_distance(embedding, "
                                 f"'{TAU_CETI}') AS d FROM {TABLE} ORDER BY d", ML_SEARCH=mode)
    _assert_nearest(result, current, brute_force(current, _vector_of(current, TAU_CETI)), 6)
    assert sorted(result["obs_publisher_did"][:3]) == sorted(
        [TAU_CETI, "ivo://vo-ml.example/miles?m0322", "ivo://vo-ml.example/miles?m0353"])
    assert np.allclose(result["d"][:3], 0) and "ivo://vo-ml.example/miles?m0082" not in list(
        result["obs_publisher_did"])
    assert plan.startswith(kind)


def test_a_renamed_row_is_found_by_its_new_name_only(archive, tmp_path):
    """The index keeps the rows' keys; once one changes, the index is stale and not asked."""
    renamed = _copy_archive(archive, tmp_path,
                            f"UPDATE {TABLE} SET obs_id = 'tau-ceti' WHERE obs_publisher_did = ?",
                            [TAU_CETI])
    query = ("SELECT TOP 3 obs_publisher_did, ml_distance(embedding, '{}') AS d "
             f"FROM {TABLE} ORDER BY d")
    client = _app(renamed)
    result, plan = _sync(client, query.format("tau-ceti"))
    old_name = _post(client, query.format("m0067"))
    assert result["obs_publisher_did"][0] == TAU_CETI and result["d"][0] == 0
    assert "no up-to-date l2 neighbour index" in plan
    assert old_name.status_code == 400 and "'m0067'" in old_name.text


def test_a_name_is_resolved_by_one_rule_however_the_query_runs(archive, tmp_path):
    """Publisher DID before obs_id: a row whose DID is the name, without an embedding, is the
    reference (an error) even though another row has the name as its obs_id."""
    unembedded = "ivo://vo-ml.example/miles?m0082"
    db = _copy_archive(archive, tmp_path,
                       f"UPDATE {TABLE} SET embedding = CASE WHEN obs_publisher_did = $1 THEN "
                       f"NULL ELSE embedding END, obs_id = CASE WHEN obs_publisher_did = $2 "
                       "THEN $1 ELSE obs_id END", [unembedded, TAU_CETI])
    vo_ml("index", "--db", db, "--table", TABLE, check=True)
    query = (f"SELECT TOP 3 obs_publisher_did, ml_distance(embedding, '{unembedded}') AS d "
             f"FROM {TABLE} ORDER BY d")
    client = _app(db)
    answers = [_post(client, query, ML_SEARCH=mode) for mode in ("auto", "exact")]
    _, indexed = _sync(client, query.replace(unembedded, TAU_CETI))
    assert indexed.startswith("approximate")
    for answer in answers:
        assert answer.status_code == 400 and "has no embedding" in answer.text


def test_a_damaged_index_is_not_used(archive, tmp_path):
    db = copy_archive(archive, tmp_path, index=True)
    for damaged in Path(f"{db}.neighbours").glob("*.obs_id.values.npy"):
        damaged.write_bytes(damaged.read_bytes()[:100])
    result, plan = _sync(_app(db), f"SELECT TOP 3 obs_publisher_did, ml_distance("
                                   f"embedding, '{TAU_CETI}') AS d FROM {TABLE} ORDER BY d")
    assert result["obs_publisher_did"][0] == TAU_CETI and "no up-to-date l2" in plan


def test_an_index_built_again_replaces_the_last_build_whole(archive, tmp_path):
    db = copy_archive(archive, tmp_path, index=True)
    for _ in range(2):
        vo_ml("index", "--db", db, "--table", TABLE, check=True)
    folder = Path(f"{db}.neighbours")
    description = json.loads((folder / f"{TABLE}.embedding.l2.json").read_text())
    built = sorted(p.name for p in folder.iterdir())
    prefix = f"{TABLE}.embedding.l2.{description['build']}"
    assert built == sorted([f"{TABLE}.embedding.l2.json", f"{prefix}.faiss",
                            *(f"{prefix}.{key}.{part}.npy" for key in ("obs_id", "obs_publisher_did")
                              for part in ("positions", "values"))])
    assert description["rows"] == description["fingerprint"][0] == 91


@pytest.fixture(scope="module")
def grown(archive, tmp_path_factory) -> dict:
    """A served copy with 99 more copies of every row, their embeddings moved by noise, indexed
    again: big enough (9100 rows) for a filtered search to read its ranked candidates, and to
    widen them from 100 to 800 (the service goes exact beyond a tenth of the rows)."""
    db = copy_archive(archive, tmp_path_factory.mktemp("grown"), index=True)
    with duckdb.connect() as connection:
        connection.execute("ATTACH ? AS archive", [str(db)])
        connection.execute("USE archive")
        connection.execute("SELECT setseed(0.42)")
        dimension = connection.execute(
            f"SELECT max(len(embedding)) FROM {TABLE}").fetchone()[0]
        connection.execute(
            f"INSERT INTO {TABLE} SELECT spectra.* REPLACE (obs_publisher_did || '-' || copy AS "
            "obs_publisher_did, obs_id || '-' || copy AS obs_id, CAST(list_transform(CAST("
            f"embedding AS FLOAT[]), lambda x: x + (random() - 0.5) * 0.3) AS FLOAT[{dimension}]) "
            "AS embedding) "
            f"FROM {TABLE}, range(1, 100) AS copies(copy)")
    vo_ml("index", "--db", db, "--table", TABLE, check=True)
    client = _app(db)
    rows = _rows(client, f"SELECT obs_publisher_did, teff, embedding FROM {TABLE} "
                         "WHERE embedding IS NOT NULL")
    return {"client": client, "rows": rows}


def test_a_filtered_search_reads_its_ranked_candidates_once(grown):
    rows = grown["rows"]
    assert len(rows) == 91 * 100
    result, plan = _sync(grown["client"], f"SELECT TOP 6 obs_publisher_did, teff AS vo_ml_distance, "
                                       f"ml_distance(embedding, '{TAU_CETI}') AS d FROM {TABLE} "
                                       "WHERE teff < 5500 ORDER BY d")
    cool = rows[np.asarray(rows["teff"]) < 5500]
    _assert_nearest(result, cool, brute_force(cool, _vector_of(rows, TAU_CETI)), 6)
    assert (np.asarray(result["vo_ml_distance"]) < 5500).all()
    assert plan.startswith("approximate: 100 candidates")


def test_a_filtered_search_cut_by_maxrec_says_so(grown):
    response = _post(grown["client"], f"SELECT TOP 8 obs_publisher_did, ml_distance("
                     f"embedding, '{TAU_CETI}') AS d FROM {TABLE} WHERE teff < 5500 ORDER BY d",
                     MAXREC="3")
    votable = parse(io.BytesIO(response.data))
    result = votable.get_first_table().to_table()
    cool = grown["rows"][np.asarray(grown["rows"]["teff"]) < 5500]
    _assert_nearest(result, cool, brute_force(cool, _vector_of(grown["rows"], TAU_CETI)), 3)
    infos = {i.name: i.value for i in votable.resources[0].infos}
    assert infos["QUERY_STATUS"] == "OVERFLOW" and infos["vo_ml_plan"].startswith("approximate")


def test_a_filter_widens_the_candidates_until_k_rows_pass(grown):
    """Tau Ceti's 100 rows (its own and its copies, 5264 K) are the first 100 candidates, and
    the filter drops them all; among 800, rows of hotter neighbours are left."""
    rows = grown["rows"]
    result, plan = _sync(grown["client"], f"SELECT TOP 5 obs_publisher_did, ml_distance(embedding, "
                                       f"'{TAU_CETI}') AS d FROM {TABLE} WHERE teff > 5300 "
                                       "ORDER BY d")
    hotter = rows[np.ma.filled(rows["teff"], 0) > 5300]
    _assert_nearest(result, hotter, brute_force(hotter, _vector_of(rows, TAU_CETI)), 5)
    assert plan.startswith("approximate: 800 candidates")


def test_a_filter_that_keeps_too_few_candidates_runs_exactly(grown):
    result, plan = _sync(grown["client"], f"SELECT TOP 5 obs_publisher_did, ml_distance(embedding, "
                                       f"'{TAU_CETI}') AS d FROM {TABLE} WHERE teff > 9000 "
                                       "ORDER BY d")
    hot = grown["rows"][np.asarray(grown["rows"]["teff"]) > 9000]
    _assert_nearest(result, hot, brute_force(hot, _vector_of(grown["rows"], TAU_CETI)), 5)
    assert "keep too few of the nearest rows" in plan


def test_a_moved_model_is_a_clear_error_until_models_dir_names_it(archive, tmp_path):
    moved = _copy_archive(archive, tmp_path, "UPDATE vo_ml.models SET card = json_merge_patch("
                                             "card, '{\"location\": \"/nowhere/model\"}')")
    spectra = _spectra(HELD_OUT / "MILES_res2.50_star_m0807V.fits")
    response = _upload(_app(moved), LIKE_MINE.format(k=3), spectra)
    assert response.status_code == 400 and "ADQL-E12" in response.text
    assert "/nowhere/model" in response.text and "MODELS_DIR" in response.text
    result, _ = _answer(_upload(_app(moved, MODELS_DIR=str(archive["model_dir"].parent)),
                                LIKE_MINE.format(k=3), spectra))
    assert len(result) == 3


def test_concurrent_queries_at_a_cold_service_all_succeed(archive, tmp_path):
    """50 clients at once just after start: the first queries load the index (its fingerprint,
    the table's columns) while the others run theirs, each on its own cursor, never sharing one."""
    query = (f"SELECT TOP 5 obs_publisher_did, ml_distance(embedding, '{TAU_CETI}') AS d "
             f"FROM {TABLE} ORDER BY d")
    clients = 50
    start = threading.Barrier(clients)

    def ask(root: str) -> requests.Response:
        start.wait()
        return requests.post(f"{root}/tap/sync", data={"LANG": "ADQL", "QUERY": query},
                             timeout=120)

    with serving(copy_archive(archive, tmp_path, index=True)) as root:
        with ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(ask, [root] * clients))
        exact = requests.post(f"{root}/tap/sync", data={"LANG": "ADQL", "QUERY": query,
                                                        "ML_SEARCH": "exact"}, timeout=120)
    failures = [a.text for a in answers if a.status_code != 200]
    assert not failures, f"{len(failures)} of {clients} failed, the first: {failures[0]}"
    expected, _ = _result(exact.content)
    for answer in answers:
        result, plan = _result(answer.content)
        assert list(result["obs_publisher_did"]) == list(expected["obs_publisher_did"])
        assert plan.startswith("approximate")
