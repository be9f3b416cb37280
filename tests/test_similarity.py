"""Latent-space similarity over HTTP with pyvo, against brute-force numpy on the MILES embeddings.

The served archive has the neighbour index `vo-ml embed` builds, so ``TOP k ... ORDER BY
ml_distance`` runs on index candidates re-ranked exactly; every answer is compared with the
distances numpy computes over all embeddings the service publishes.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import pyvo
import requests
from astropy.io.votable import parse
from astropy.table import Table
from conftest import TABLE

TAU_CETI = "ivo://vo-ml.example/miles?m0067"


@pytest.fixture(scope="module")
def service(tap_url):
    return pyvo.dal.TAPService(tap_url)


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


def _sync(tap_url: str, query: str, **params: str):
    response = requests.post(f"{tap_url}/sync", data={"LANG": "ADQL", "QUERY": query, **params},
                             timeout=60)
    assert response.status_code == 200, response.text
    votable = parse(io.BytesIO(response.content))
    plan = next(i.value for i in votable.resources[0].infos if i.name == "vo_ml_plan")
    return votable.get_first_table().to_table(), plan


def _assert_nearest(result: Table, candidates: Table, distances: np.ndarray, k: int) -> None:
    """The result holds the k smallest distances, in order; rows tied at the k-th may differ."""
    expected = np.sort(distances)[:k]
    np.testing.assert_allclose(np.asarray(result["d"]), expected, rtol=1e-5, atol=1e-6)
    by_did = dict(zip(candidates["obs_publisher_did"], distances, strict=True))
    np.testing.assert_allclose([by_did[d] for d in result["obs_publisher_did"]], result["d"],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["auto", "exact"])
def test_top_k_matches_brute_force_with_the_plan_named(tap_url, embeddings, mode):
    result, plan = _sync(tap_url, f"SELECT TOP 10 obs_publisher_did, ml_distance(embedding, "
                                  f"'{TAU_CETI}') AS d FROM {TABLE} ORDER BY d", ML_SEARCH=mode)
    _assert_nearest(result, embeddings, brute_force(embeddings, _vector_of(embeddings, TAU_CETI)), 10)
    assert result["obs_publisher_did"][0] == TAU_CETI
    assert plan.startswith("approximate: 91 candidates from the HNSW index" if mode == "auto"
                           else "exact: every row")


def test_a_filter_widens_the_candidates_until_k_rows_pass(tap_url, embeddings):
    result, plan = _sync(tap_url, f"SELECT TOP 5 obs_publisher_did, ml_distance(embedding, "
                                  f"'{TAU_CETI}') AS d FROM {TABLE} WHERE teff > 7000 ORDER BY d")
    hot = embeddings[np.asarray(embeddings["teff"]) > 7000]
    assert len(result) == 5 and (np.asarray(hot["teff"]) > 7000).all()
    _assert_nearest(result, hot, brute_force(hot, _vector_of(embeddings, TAU_CETI)), 5)
    assert "re-ranked by the exact distance" in plan or plan.startswith("exact")


def test_obs_id_and_written_vectors_are_references_too(tap_url, embeddings):
    row = list(embeddings["obs_publisher_did"]).index(TAU_CETI)
    vector = np.asarray(embeddings["embedding"][row], dtype=np.float64)
    written = " ".join(repr(float(x)) for x in np.asarray(embeddings["embedding"][row]))
    by_obs_id, _ = _sync(tap_url, f"SELECT TOP 3 obs_publisher_did, ml_distance(embedding, "
                                  f"'{embeddings['obs_id'][row]}') AS d FROM {TABLE} ORDER BY d")
    by_vector, _ = _sync(tap_url, f"SELECT TOP 3 obs_publisher_did, ml_distance(embedding, "
                                  f"ml_vector('{written}')) AS d FROM {TABLE} ORDER BY d")
    distances = brute_force(embeddings, vector)
    _assert_nearest(by_obs_id, embeddings, distances, 3)
    _assert_nearest(by_vector, embeddings, distances, 3)


def test_cosine_distance_without_its_index_is_exact_and_says_so(tap_url, embeddings):
    result, plan = _sync(tap_url, f"SELECT TOP 7 obs_publisher_did, ml_cosine_distance(embedding, "
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
def test_similarity_errors_are_dali_documents(tap_url, query, fragment):
    response = requests.post(f"{tap_url}/sync", data={"LANG": "ADQL", "QUERY": query}, timeout=60)
    assert response.status_code == 400 and fragment in response.text
