"""How far to trust an answer for an uploaded spectrum: ``ml_coverage``, ``ml_encode_error`` and
``ml_typicality`` beside ``ml_encode``, the warnings a result gives for uncertain rows, and the
spectra the service refuses to encode; through the real app and, as a client, pyvo on the
session's server.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.io.votable import parse
from astropy.table import Table
from conftest import MILES, TABLE, TAU_CETI, copy_archive, votlint
from test_similarity import HELD_OUT, LIKE_MINE, _answer, _app, _rows, _spectra, _upload
from werkzeug.test import TestResponse

from vo_ml.service.settings import Settings, SettingsError

#: The neighbours of an uploaded spectrum, with every measure of how far to trust them.
TRUSTED = (f"SELECT TOP 3 u.name, s.obs_publisher_did, ml_distance(s.embedding, "
           "ml_encode(u.wavelength, u.flux)) AS d, ml_coverage(u.wavelength, u.flux) AS coverage, "
           "ml_encode_error(u.wavelength, u.flux) AS error, ml_typicality(u.wavelength, u.flux) "
           f"AS typicality FROM {TABLE} AS s, TAP_UPLOAD.mine AS u ORDER BY d")
#: The measures alone, for every uploaded row (with one distance, which makes the encoding).
MEASURED = ("SELECT u.name, ml_coverage(u.wavelength, u.flux) AS coverage, "
            "ml_encode_error(u.wavelength, u.flux) AS error, ml_typicality(u.wavelength, u.flux) "
            f"AS typicality, ml_distance(s.embedding, ml_encode(u.wavelength, u.flux)) AS d "
            f"FROM {TABLE} AS s JOIN TAP_UPLOAD.mine AS u ON s.obs_publisher_did = '{TAU_CETI}' "
            "ORDER BY u.name")
STAR = HELD_OUT / "MILES_res2.50_star_m0807V.fits"
#: The model's grid: the MILES archive config's, uniform in log-wavelength.
GRID = (3545, 7405)
#: The wavelength that halves the grid's pixels.
MIDDLE = float(np.sqrt(GRID[0] * GRID[1]))


def _measured(response: TestResponse) -> Table:
    """The rows of a query that must have succeeded."""
    assert response.status_code == 200, response.text
    return parse(io.BytesIO(response.data)).get_first_table().to_table()


def _warnings(document: bytes) -> list[str]:
    votable = parse(io.BytesIO(document))
    return [i.value for i in votable.resources[0].infos if i.name == "warning"]


def _star_row(name: str = "full", start: float = 0, stop: float = np.inf
              ) -> tuple[str, np.ndarray, np.ndarray]:
    """The held-out star between ``start`` and ``stop`` A, as a row named ``name``."""
    spectra = _spectra(STAR)
    wavelength = np.asarray(spectra["wavelength"][0])
    kept = (wavelength >= start) & (wavelength <= stop)
    return name, wavelength[kept], np.asarray(spectra["flux"][0])[kept]


def _rows_of(*rows: tuple[str, np.ndarray, np.ndarray]) -> Table:
    """An upload with one spectrum a row, each of its own length."""
    table = Table({"name": [r[0] for r in rows]})
    for number, part in ((1, "wavelength"), (2, "flux")):
        column = np.empty(len(rows), dtype=object)
        column[:] = [np.asarray(r[number], dtype=np.float64) for r in rows]
        table[part] = column
    table["wavelength"].unit = u.AA
    return table


def test_a_held_out_star_is_covered_reconstructed_and_typical(client):
    result, _ = _answer(_upload(client, TRUSTED, _spectra(STAR)))
    recon = np.asarray(_rows(client, f"SELECT ml_recon_error FROM {TABLE} WHERE ml_recon_error "
                                     "IS NOT NULL")["ml_recon_error"])
    assert len(result) == 3 and len(set(result["coverage"])) == 1
    assert result["coverage"][0] > 0.95
    assert np.quantile(recon, 0.02) / 2 < result["error"][0] < 2 * np.quantile(recon, 0.98)
    assert result["typicality"][0] > 5
    fields = {f.name: f for f in parse(io.BytesIO(_upload(client, TRUSTED, _spectra(STAR)).data))
              .get_first_table().fields}
    assert (fields["coverage"].ucd, fields["error"].ucd) == ("stat.filling;em.wl",
                                                             "stat.fit.residual")
    assert fields["typicality"].ucd == "stat.percentile"


def test_an_archive_spectrum_uploaded_is_measured_as_the_archive_measured_it(client, archive):
    """encode_rows, which the service measures uploads with, gives the archive's spectrum (as
    ingest prepared it) its ml_recon_error; uploaded, its error is on that scale (an upload
    states no resolving power, so it is smoothed a little differently)."""
    from vo_ml.ml.embedding import encode_rows
    from vo_ml.spectra.readers import read_spectrum

    path = MILES / "MILES_res2.50_star_m0067V.fits"
    own = _rows(client, f"SELECT ml_recon_error FROM {TABLE} WHERE obs_publisher_did = "
                        f"'{TAU_CETI}'")["ml_recon_error"][0]
    flux, mask = archive["config"].preprocessing.apply(read_spectrum(path))
    _, error = encode_rows(flux[None], mask[None], archive["model_dir"])
    np.testing.assert_allclose(error[0], own, rtol=1e-4)
    result = _measured(_upload(client, MEASURED, _spectra(path)))
    np.testing.assert_allclose(result["error"][0], own, rtol=0.1)
    assert result["typicality"][0] > 5


def test_half_the_range_is_half_the_coverage(client):
    response = _upload(client, MEASURED, _rows_of(_star_row("half", 0, MIDDLE)))
    result = _measured(response)
    assert abs(result["coverage"][0] - 0.5) < 0.03
    assert not [w for w in _warnings(response.data) if " covers " in w]


def test_a_spectrum_covering_little_of_the_range_is_named_in_a_warning(client, stilts, tmp_path):
    response = _upload(client, MEASURED, _rows_of(_star_row(), _star_row("cut", 5000, 5500)))
    result = _measured(response)
    coverage = dict(zip(result["name"], result["coverage"], strict=True))
    assert coverage["cut"] < 0.3 < coverage["full"]
    covering = [w for w in _warnings(response.data) if " covers " in w]
    assert covering == [f"TAP_UPLOAD.mine row 2: covers {coverage['cut']:.0%} of the model's "
                        f"{GRID[0]}-{GRID[1]} A range (ml_coverage {coverage['cut']:.2f}, below "
                        "0.3); its neighbours in miles.spectra are uncertain"]
    assert votlint(stilts, response.data, tmp_path) == ""


def test_a_coverage_threshold_is_a_setting(archive, tmp_path):
    strict = _app(copy_archive(archive, tmp_path, index=True), ML_MIN_COVERAGE="0.6")
    response = _upload(strict, MEASURED, _rows_of(_star_row("half", 0, MIDDLE)))
    assert [w.split(":")[0] for w in _warnings(response.data) if " covers " in w] == [
        "TAP_UPLOAD.mine row 1"]
    with pytest.raises(SettingsError, match="ML_MIN_COVERAGE=2.0 is more than 1"):
        Settings.from_config({"ML_MIN_COVERAGE": 2})


def test_noise_is_unlike_anything_in_the_archive(client):
    """Whether the latent distance tells noise from a star depends on the model (not in a 2-D
    latent space, where everything lands among the archive's spectra): the warning says why
    it is unlike them, by typicality or by a reconstruction worse than any archive spectrum's."""
    name, wavelength, _ = _star_row("noise")
    noise = np.random.default_rng(15).normal(1.0, 0.3, wavelength.size)
    response = _upload(client, MEASURED, _rows_of(_star_row(), (name, wavelength, noise)))
    result = _measured(response)
    measured = {row["name"]: row for row in result}
    recon = _rows(client, f"SELECT max(ml_recon_error) AS worst FROM {TABLE}")["worst"][0]
    warnings = _warnings(response.data)
    assert len(warnings) == 1 and warnings[0].startswith(
        "TAP_UPLOAD.mine row 2: unlike anything in miles.spectra: ")
    assert measured["noise"]["typicality"] < 1 or measured["noise"]["error"] > recon
    assert ("typicality" in warnings[0]) == (measured["noise"]["typicality"] < 1)
    assert measured["full"]["error"] < recon and measured["full"]["typicality"] > 1


@pytest.mark.parametrize(("flux", "reason"), [
    (lambda w: np.ones(3), "only 3 finite flux values, too short to encode"),
    (lambda w: np.full(w.size, 2.5), "a flat line"),
    (lambda w: np.zeros(w.size), "every flux value is 0"),
    (lambda w: np.full(w.size, np.nan), "every flux value is NaN"),
])
def test_spectra_that_cannot_be_encoded_are_refused_naming_the_row(client, flux, reason):
    name, wavelength, _ = _star_row("bad")
    values = flux(wavelength)
    bad = (name, wavelength[:values.size], values)
    response = _upload(client, LIKE_MINE.format(k=3), _rows_of(_star_row(), bad))
    assert response.status_code == 400, response.text
    assert "UPLOAD mine row 2" in response.text and reason in response.text
    assert "upload " in response.text.split(reason)[-1]


def test_bad_pixels_of_an_uploaded_spectrum_are_masked_not_the_whole_row(client):
    """A NaN in a variable-length array is a bad pixel: the row is still a spectrum."""
    name, wavelength, flux = _star_row("gappy")
    flux[wavelength > MIDDLE] = np.nan
    result = _measured(_upload(client, MEASURED, _rows_of(_star_row(), (name, wavelength, flux))))
    coverage = dict(zip(result["name"], result["coverage"], strict=True))
    assert abs(coverage["gappy"] - 0.5) < 0.03 and coverage["full"] > 0.95


def test_a_measure_needs_the_encoding_of_its_columns(client):
    response = _upload(client, "SELECT ml_coverage(u.wavelength, u.flux) FROM TAP_UPLOAD.mine AS u",
                       _spectra(STAR))
    assert response.status_code == 400 and "ADQL-E15" in response.text
    assert "ml_distance(s.embedding, ml_encode(u.wavelength, u.flux))" in response.text


def _without_index(archive: dict, folder: Path) -> Path:
    return copy_archive(archive, folder)


def _with_an_index_of_old(archive: dict, folder: Path) -> Path:
    """A copy whose index was built before the nearest-neighbour distances were recorded."""
    db = copy_archive(archive, folder, index=True)
    description = Path(f"{db}.neighbours", f"{TABLE}.embedding.l2.json")
    meta = json.loads(description.read_text())
    del meta["nearest_distances"]
    description.write_text(json.dumps(meta))
    return db


@pytest.mark.parametrize(("served", "reason"), [
    (_without_index, "there is no up-to-date l2 neighbour index of it"),
    (_with_an_index_of_old, "its neighbour index was built before they were recorded"),
])
def test_typicality_without_the_archive_distances_says_what_to_run(archive, tmp_path, served,
                                                                    reason):
    client = _app(served(archive, tmp_path))
    response = _upload(client, TRUSTED, _spectra(STAR))
    assert response.status_code == 400 and "ADQL-E16" in response.text
    assert reason in response.text and "'vo-ml index --table miles.spectra'" in response.text
    measured = _upload(client, TRUSTED.replace(", ml_typicality(u.wavelength, u.flux) "
                                               "AS typicality", ""), _spectra(STAR))
    result, _ = _answer(measured)
    assert result["coverage"][0] > 0.95


def test_the_index_keeps_every_rows_nearest_neighbour_distance(archive, client):
    description = json.loads(Path(f"{archive['db']}.neighbours",
                                  f"{TABLE}.embedding.l2.json").read_text())
    rows = _rows(client, f"SELECT embedding FROM {TABLE} WHERE embedding IS NOT NULL")
    vectors = np.asarray(rows["embedding"], dtype=np.float64)
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    np.testing.assert_allclose(description["nearest_distances"], np.sort(distances.min(axis=1)),
                               rtol=1e-4, atol=1e-5)


def test_pyvo_reads_the_warnings_sync_and_async(service):
    cut = _rows_of(_star_row("cut", 5000, 5500))
    for results in (service.search(TRUSTED, uploads={"mine": cut}),
                    service.run_async(TRUSTED, uploads={"mine": cut})):
        warnings = [i.value for i in results.votable.resources[0].infos if i.name == "warning"]
        assert [w for w in warnings if " covers " in w][0].startswith(
            "TAP_UPLOAD.mine row 1: covers ")
        assert results["coverage"][0] < 0.3
