"""Reading ESO SDP, LAMOST, SDSS (BOSS, APOGEE) and Spectrum DM VOTable files: values agree with the headers
and sources."""

from __future__ import annotations

import subprocess
from pathlib import Path

import duckdb
import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.io.votable.tree import Field, Resource, TableElement, VOTableFile
from conftest import DATA, HARPS_CUT, vo_ml

from vo_ml.spectra.readers import SpectrumReadError, read_spectrum
from vo_ml.spectra.votable_dm import NO_SPECTRAL_AXIS, column_role

FORMATS = DATA / "formats"
XSL_ROWS = FORMATS / "xsl_spectrum_X0360_uvb.fits"
XSL_ONE_ROW = FORMATS / "xsl_X0360_uvb_sdp_one_row.fits"
MILES_SAME_STAR = FORMATS / "MILES_res2.50_star_m0505V.fits"
LAMOST_LRS = FORMATS / "spec-58397-EG014118N254444M01_sp03-031.fits"
LAMOST_MRS = FORMATS / "med-58625-TD192102N424113K01_sp12-076.fits.gz"
HARPS_VOTABLE = FORMATS / "harps_cut_spectrum_dm.vot.xml"
MANGA = FORMATS / "MaNGA_multicomp_test_spectra.fits.gz"
SSA_RESPONSE = FORMATS / "ssa_gavo_flashheros_datalink.xml"
BOSS_LITE = FORMATS / "spec-3586-55181-0500_lite.fits"
APOGEE_VISIT = FORMATS / "apVisit-r13-5095-55844-128_cut.fits"
#: APOGEE_PIXMASK bits 0-7 (BADPIX ... NOSKY) mark bad pixels; bits 8 on are warnings.
APOGEE_BAD_BITS = 0xFF


def test_both_sdp_layouts_of_the_same_xshooter_spectrum_read_identically():
    rows, one_row = read_spectrum(XSL_ROWS), read_spectrum(XSL_ONE_ROW)
    assert fits.getdata(XSL_ONE_ROW, 1)["WAVE"].shape == (1, 17140)
    assert rows.wavelength.unit == one_row.wavelength.unit == u.nm
    np.testing.assert_array_equal(rows.wavelength.value, one_row.wavelength.value)
    np.testing.assert_array_equal(rows.flux, one_row.flux)
    np.testing.assert_array_equal(rows.error, one_row.error)
    np.testing.assert_array_equal(rows.mask, one_row.mask)
    assert (rows.medium, rows.frame) == (one_row.medium, one_row.frame)
    same_file_fields = {"source": "", "checksum": ""}
    assert {**vars(rows.meta), **same_file_fields} == {**vars(one_row.meta), **same_file_fields}


def test_xshooter_sdp_values_match_its_headers():
    spectrum = read_spectrum(XSL_ROWS)
    primary = fits.getheader(XSL_ROWS, 0)
    assert spectrum.wavelength.size == 17140
    assert spectrum.wavelength[0].value == pytest.approx(primary["WAVELMIN"], rel=1e-6)
    assert spectrum.wavelength[-1].value == pytest.approx(primary["WAVELMAX"], rel=1e-6)
    assert (spectrum.medium, spectrum.frame) == ("air", "rest")
    meta = spectrum.meta
    assert (meta.target, meta.instrument) == ("BD+012916", "XSHOOTER")
    assert (meta.ra, meta.dec) == pytest.approx((215.4385833, 0.7831028))
    assert (meta.mjd, meta.exptime, meta.snr) == pytest.approx((56059.144977068, 5.999994, 20.68))
    assert meta.resolving_power == pytest.approx(9994.64, rel=1e-5)
    assert not spectrum.mask.any()
    assert np.array_equal(spectrum.error, fits.getdata(XSL_ROWS, 1)["ERR"].astype(np.float64))


def test_xshooter_lines_fall_on_the_air_wavelengths_of_miles_for_the_same_star():
    """Evidence for the SDP air assumption: vacuum wavelengths would put the lines 1.3 A to the red."""
    xsl, miles = read_spectrum(XSL_ROWS), read_spectrum(MILES_SAME_STAR)
    grid = miles.wavelength.value
    window = (grid > 4000) & (grid < 5500)
    sigma_pixels = 2.5 / 2.355 / np.median(np.diff(xsl.wavelength.to_value(u.AA)))
    kernel = np.exp(-0.5 * (np.arange(-40, 41) / sigma_pixels) ** 2)
    smoothed = np.convolve(xsl.flux, kernel / kernel.sum(), mode="same")

    def correlation(shift: float) -> float:
        shifted = np.interp(grid[window], xsl.wavelength.to_value(u.AA) + shift, smoothed)
        reference = _flattened(grid[window], miles.flux[window])
        return np.corrcoef(_flattened(grid[window], shifted), reference)[0, 1]

    shifts = np.arange(-2.0, 2.01, 0.1)
    best = shifts[np.argmax([correlation(shift) for shift in shifts])]
    assert abs(best) < 0.3


def _flattened(wavelength, flux):
    return flux / np.polyval(np.polyfit(wavelength, flux, 5), wavelength) - 1.0


def test_sdp_quality_flags_mask_their_pixels(tmp_path):
    path = tmp_path / "with_qual.fits"
    with fits.open(XSL_ONE_ROW) as hdus:
        quality = np.zeros((1, 17140), dtype=np.int32)
        quality[0, [10, 500, 17000]] = [1, 4, 2]
        columns = hdus[1].columns + fits.ColDefs([fits.Column(name="QUAL", format="17140J", array=quality)])
        fits.HDUList([hdus[0].copy(), fits.BinTableHDU.from_columns(columns)]).writeto(path)
    spectrum = read_spectrum(path)
    assert np.flatnonzero(spectrum.mask).tolist() == [10, 500, 17000]
    assert np.isnan(spectrum.flux[spectrum.mask]).all()


def test_lamost_lrs_image_gives_vacuum_heliocentric_wavelengths_and_ivar_errors():
    spectrum = read_spectrum(LAMOST_LRS)
    header = fits.getheader(LAMOST_LRS)
    flux, ivar, wavelength, andmask, _ = fits.getdata(LAMOST_LRS).astype(np.float64)
    assert spectrum.wavelength.unit == u.AA
    np.testing.assert_array_equal(spectrum.wavelength.value, wavelength)
    assert spectrum.wavelength[0].value == pytest.approx(10 ** header["COEFF0"], rel=1e-4)
    assert (spectrum.medium, spectrum.frame) == ("vacuum", "barycentric")
    np.testing.assert_array_equal(spectrum.mask, (ivar <= 0) | (andmask != 0))
    good = ~spectrum.mask
    np.testing.assert_allclose(spectrum.error[good], ivar[good] ** -0.5)
    meta = spectrum.meta
    assert (meta.target, meta.instrument) == ("LAMOST J013730.44+252537.7", "LAMOST LRS")
    assert (meta.ra, meta.dec) == pytest.approx((24.376852, 25.427147))
    assert (meta.exptime, meta.snr) == pytest.approx((5400.0, 241.09))
    assert meta.mjd == pytest.approx(58396 + 16 / 24 + 20 / 1440)
    assert meta.resolving_power == 1800.0


def test_lamost_lrs_table_layout_reads_like_the_image_layout(tmp_path):
    path = tmp_path / "lrs_table.fits"
    with fits.open(LAMOST_LRS) as hdus:
        rows = hdus[0].data
        n = rows.shape[1]
        columns = [fits.Column(name=name, format=f"{n}E", array=rows[index][None, :])
                   for index, name in enumerate(("FLUX", "IVAR", "WAVELENGTH", "ANDMASK", "ORMASK"))]
        fits.HDUList([fits.PrimaryHDU(header=hdus[0].header.copy()[8:]),
                      fits.BinTableHDU.from_columns(columns)]).writeto(path)
    image, table = read_spectrum(LAMOST_LRS), read_spectrum(path)
    np.testing.assert_array_equal(image.wavelength, table.wavelength)
    np.testing.assert_array_equal(image.flux, table.flux)
    np.testing.assert_array_equal(image.mask, table.mask)


def test_lamost_mrs_joins_blue_and_red_coadds_with_the_gap_masked():
    spectrum = read_spectrum(LAMOST_MRS)
    with fits.open(LAMOST_MRS) as hdus:
        blue, red = (10.0 ** hdus[name].data["LOGLAM"].astype(np.float64) for name in ("COADD_B", "COADD_R"))
        snrs = [hdus[name].header["SNR"] for name in ("COADD_B", "COADD_R")]
        exposures = sum(hdu.header["EXPTIME"] for hdu in hdus if hdu.name.startswith("B-"))
    wavelength = spectrum.wavelength.value
    assert wavelength.size == blue.size + red.size + 4
    np.testing.assert_array_equal(wavelength[1:blue.size + 1], blue)
    np.testing.assert_array_equal(wavelength[blue.size + 3:-1], red)
    gap = (wavelength > blue[-1]) & (wavelength < red[0])
    assert gap.sum() == 2 and spectrum.mask[gap].all()
    assert 4890 < wavelength[0] < 4900 and 6840 < wavelength[-1] < 6850
    assert (spectrum.medium, spectrum.frame) == ("vacuum", "barycentric")
    assert spectrum.meta.snr == pytest.approx(min(snrs))
    assert spectrum.meta.exptime == pytest.approx(exposures)
    assert (spectrum.meta.instrument, spectrum.meta.resolving_power) == ("LAMOST MRS", 7500.0)


def test_spectrum_dm_votable_gives_back_the_harps_numbers_it_was_written_from():
    from_votable, from_fits = read_spectrum(HARPS_VOTABLE), read_spectrum(HARPS_CUT)
    n = from_votable.wavelength.size
    assert n == 2000
    assert from_votable.wavelength.unit == u.AA
    np.testing.assert_allclose(from_votable.wavelength.value, from_fits.wavelength.value[:n], rtol=1e-12)
    raw = fits.getdata(HARPS_CUT)[:n].astype(np.float64)
    np.testing.assert_array_equal(from_votable.flux, raw)
    assert (from_votable.medium, from_votable.frame) == ("air", "barycentric")
    shared = ("target", "ra", "dec", "mjd", "exptime", "instrument")
    assert [getattr(from_votable.meta, key) for key in shared] == [getattr(from_fits.meta, key)
                                                                   for key in shared]


@pytest.mark.parametrize(
    ("utype", "ucd", "role"),
    [
        ("spec:Data.SpectralAxis.Value", None, "wavelength"),
        ("SPEC:SPECTRUM.DATA.SPECTRALAXIS.VALUE", None, "wavelength"),
        ("Data.FluxAxis.Value", None, "flux"),
        ("spec:Data.FluxAxis.Accuracy.StatError", None, "error"),
        (None, "em.wl", "wavelength"),
        (None, "phot.flux.density;em.wl", "flux"),
        (None, "stat.error;phot.flux.density;em.wl", "error"),
        ("ssa:Char.SpectralAxis.Coverage.Bounds.Start", "em.wl;stat.min", None),
        (None, "pos.eq.ra", None),
    ],
)
def test_columns_are_recognised_by_utype_or_ucd(utype, ucd, role):
    assert column_role(utype, ucd) == role


def _votable(tmp_path, fields, rows):
    votable = VOTableFile(version="1.3")
    resource = Resource()
    votable.resources.append(resource)
    table = TableElement(votable)
    resource.tables.append(table)
    table.fields.extend(Field(votable, name=name, datatype="double", **attributes)
                        for name, attributes in fields)
    table.create_arrays(len(rows[0]))
    for (name, _), values in zip(fields, rows, strict=True):
        table.array[name] = values
    path = tmp_path / "spectrum.xml"
    votable.to_xml(str(path))
    return path


def test_a_ucd_only_votable_in_nm_is_read_as_vacuum_topocentric(tmp_path):
    path = _votable(tmp_path, [("lam", {"ucd": "em.wl", "unit": "nm"}),
                               ("f", {"ucd": "phot.flux.density;em.wl"})],
                    [[500.0, 500.1, 500.2], [1.0, 2.0, 3.0]])
    spectrum = read_spectrum(path)
    assert spectrum.wavelength.to_value(u.AA) == pytest.approx([5000.0, 5001.0, 5002.0])
    assert (spectrum.medium, spectrum.frame) == ("vacuum", "topocentric")


@pytest.mark.parametrize(
    ("fields", "rows", "reason"),
    [
        ([("f", {"ucd": "phot.flux.density"})], [[1.0, 2.0]], "no spectral axis column"),
        ([("w", {"ucd": "em.wl", "unit": "Angstrom"})], [[1.0, 2.0]], "no flux column"),
        ([("w", {"ucd": "em.wl", "unit": "furlong"}), ("f", {"ucd": "phot.flux.density"})],
         [[1.0, 2.0], [1.0, 1.0]], "unknown wavelength unit 'furlong'"),
        ([("w", {"ucd": "em.wl", "unit": "s"}), ("f", {"ucd": "phot.flux.density"})],
         [[1.0, 2.0], [1.0, 1.0]], "not a length"),
        ([("w", {"ucd": "em.wl"}), ("f", {"ucd": "phot.flux.density"})],
         [[1.0, 2.0], [1.0, 1.0]], "declares none"),
        ([("w", {"ucd": "em.wl", "unit": "Angstrom"}), ("f", {"ucd": "phot.flux.density"})],
         [[5000.0, 5002.0, 5001.0], [1.0, 1.0, 1.0]], "not monotonic: pixel 2"),
        ([("w", {"ucd": "em.wl", "unit": "Angstrom"}), ("f", {"ucd": "phot.flux.density"})],
         [[5000.0, 5001.0], [np.nan, np.nan]], "NaN or infinite everywhere"),
    ],
)
def test_broken_votables_are_refused_with_the_reason(tmp_path, fields, rows, reason):
    with pytest.raises(SpectrumReadError, match=reason):
        read_spectrum(_votable(tmp_path, fields, rows))


def test_an_ssa_query_response_is_refused_as_metadata_without_spectral_axis():
    with pytest.raises(SpectrumReadError) as error:
        read_spectrum(SSA_RESPONSE)
    assert error.value.reason == NO_SPECTRAL_AXIS


def test_a_file_of_many_galaxy_spectra_is_refused_with_the_count():
    with pytest.raises(SpectrumReadError, match=r"holds 3 spectra \(HDU FLUX"):
        read_spectrum(MANGA)


def test_a_table_of_several_array_rows_is_refused_with_the_count(tmp_path):
    path = tmp_path / "three.fits"
    columns = [fits.Column(name=name, format="4E", unit="nm", array=np.tile(np.arange(1.0, 5.0), (3, 1)))
               for name in ("WAVE", "FLUX")]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns)]).writeto(path)
    with pytest.raises(SpectrumReadError, match="holds 3 spectra"):
        read_spectrum(path)


def test_a_truncated_fits_file_is_refused_as_unreadable(tmp_path):
    path = tmp_path / "truncated.fits"
    path.write_bytes(XSL_ROWS.read_bytes()[:4000])
    with pytest.raises(SpectrumReadError, match="unreadable FITS"):
        read_spectrum(path)


def test_a_fits_file_without_any_wavelength_axis_is_refused(tmp_path):
    path = tmp_path / "table.fits"
    column = fits.Column(name="MAG", format="E", array=np.ones(3))
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([column])]).writeto(path)
    with pytest.raises(SpectrumReadError, match="no 1-D spectrum found"):
        read_spectrum(path)


def test_the_same_star_through_two_formats_gives_the_same_normalised_spectrum():
    """X-shooter (SDP table, R ~ 10,000) and MILES (WCS image, 2.5 A FWHM) of one star agree once
    both go through the same preprocessing at MILES resolution; without the common resolution
    they do not."""
    from vo_ml.spectra.grid import Preprocessing

    grid = {"start": 4000, "stop": 5500, "pixels": 3000, "spacing": "log"}
    common = Preprocessing.from_config({"grid": grid, "preprocess": {"normalise": "continuum", "fwhm": 2.5}})
    xsl, xsl_mask = common.apply(read_spectrum(XSL_ROWS))
    miles, miles_mask = common.apply(read_spectrum(MILES_SAME_STAR))
    good = ~(xsl_mask | miles_mask)
    assert good.mean() > 0.99
    rms = np.sqrt(np.mean((xsl[good] - miles[good]) ** 2))
    assert rms < 0.02
    assert np.corrcoef(xsl[good], miles[good])[0, 1] > 0.98
    native = Preprocessing.from_config({"grid": grid, "preprocess": {"normalise": "continuum"}})
    unsmoothed, _ = native.apply(read_spectrum(XSL_ROWS))
    assert np.sqrt(np.mean((unsmoothed[good] - miles[good]) ** 2)) > 4 * rms


def test_boss_coadd_gives_vacuum_heliocentric_wavelengths_with_bad_pixels_masked():
    spectrum = read_spectrum(BOSS_LITE)
    with fits.open(BOSS_LITE) as hdus:
        coadd, catalogue, header = hdus["COADD"].data, hdus["SPALL"].data, hdus[0].header
        loglam, ivar, and_mask = (coadd[name].astype(np.float64) for name in ("loglam", "ivar", "and_mask"))
        flux = coadd["flux"].astype(np.float64)
    assert spectrum.wavelength.unit == u.AA
    np.testing.assert_allclose(spectrum.wavelength.value, 10.0 ** loglam)
    assert spectrum.wavelength[0].value == pytest.approx(3561.23, abs=0.01)
    assert spectrum.wavelength[-1].value == pytest.approx(10327.61, abs=0.01)
    assert (spectrum.medium, spectrum.frame) == ("vacuum", "barycentric")
    bad = (ivar == 0) | (and_mask != 0)
    assert 12 == (ivar == 0).sum() < bad.sum() == 353
    np.testing.assert_array_equal(spectrum.mask, bad)
    assert np.isnan(spectrum.flux[bad]).all()
    np.testing.assert_array_equal(spectrum.flux[~bad], flux[~bad])
    np.testing.assert_allclose(spectrum.error[~bad], ivar[~bad] ** -0.5)
    meta = spectrum.meta
    assert (meta.target, meta.instrument) == ("SDSS J002651.29+000044.8", "BOSS")
    assert (meta.ra, meta.dec) == pytest.approx((header["PLUG_RA"], header["PLUG_DEC"]))
    assert (meta.ra, meta.dec) != pytest.approx((header["RA"], header["DEC"]), abs=0.1)  # the plate centre
    assert (meta.mjd, meta.exptime) == (55181, 6302.0)
    assert meta.snr == pytest.approx(catalogue["SN_MEDIAN_ALL"][0])
    assert 1560 < meta.resolving_power < 2650  # BOSS's range; the file's wdisp gives 1836
    assert meta.resolving_power == pytest.approx(1836.4)


def test_boss_columns_in_capitals_as_sdss_v_writes_them_read_the_same(tmp_path):
    path = tmp_path / "spec-capitals.fits"
    with fits.open(BOSS_LITE) as hdus:
        for hdu in hdus[1:3]:
            for column in hdu.columns:
                column.name = column.name.upper()
        hdus.writeto(path)
    assert "AND_MASK" in fits.getdata(path, "COADD").names
    lower, upper = read_spectrum(BOSS_LITE), read_spectrum(path)
    np.testing.assert_array_equal(lower.wavelength, upper.wavelength)
    np.testing.assert_array_equal(lower.mask, upper.mask)
    assert upper.mask.sum() == 353
    assert (upper.meta.snr, upper.meta.resolving_power) == (lower.meta.snr, lower.meta.resolving_power)


def test_apogee_visit_joins_its_three_chips_in_rising_wavelength_with_bad_pixels_masked():
    spectrum = read_spectrum(APOGEE_VISIT)
    with fits.open(APOGEE_VISIT) as hdus:
        flux, error, mask, wavelength = (np.asarray(hdus[index].data) for index in range(1, 5))
        header = hdus[0].header
    chips, pixels = wavelength.shape
    assert (chips, pixels) == (3, 1024)
    observed = spectrum.wavelength.value
    assert spectrum.wavelength.unit == u.AA and observed.size == chips * (pixels + 2)
    assert (np.diff(observed) > 0).all()
    assert 15650 < observed[0] < observed[-1] < 16955
    assert (spectrum.medium, spectrum.frame) == ("vacuum", "topocentric")
    real = np.isin(observed, wavelength)
    assert real.sum() == chips * pixels and spectrum.mask[~real].all()
    # The chips run red to blue in the file: sorting puts each file pixel where its wavelength goes.
    order = np.argsort(wavelength.ravel())
    np.testing.assert_array_equal(observed[real], wavelength.ravel()[order])
    bad = ((mask.astype(np.int64) & APOGEE_BAD_BITS) != 0).ravel()[order]
    np.testing.assert_array_equal(spectrum.mask[real], bad)
    assert bad[np.argsort(order)].reshape(chips, pixels)[:, :10].all()  # each chip's red edge
    warned = ((mask.ravel()[order] & ~APOGEE_BAD_BITS) != 0) & ~bad
    assert warned.sum() > 100 and not spectrum.mask[real][warned].any()
    good_flux = flux.ravel()[order][~bad]
    np.testing.assert_array_equal(spectrum.flux[real][~bad], good_flux)
    assert np.isnan(spectrum.flux[real][bad]).all() and (flux.ravel()[order][bad] != 0).all()
    np.testing.assert_array_equal(spectrum.error[real], error.ravel()[order])
    meta = spectrum.meta
    assert (meta.target, meta.instrument) == ("2M01183798+8403419", "APOGEE-N")
    assert (meta.ra, meta.dec) == pytest.approx((19.658251, 84.061646))
    assert meta.mjd == pytest.approx(header["JD-MID"] - 2400000.5) and int(meta.mjd) == header["MJD5"]
    assert (meta.exptime, meta.snr, meta.resolving_power) == pytest.approx((2002.04, 44.9672, 22500.0))


def test_apogee_images_of_many_fibres_are_refused_with_the_count(tmp_path):
    """apPlate files have apVisit's HDUs with one row per fibre: many spectra, not three chips of one."""
    path = tmp_path / "apPlate-like.fits"
    with fits.open(APOGEE_VISIT) as hdus:
        images = [fits.ImageHDU(np.repeat(hdu.data[:1], 5, axis=0), header=hdu.header) for hdu in hdus[1:5]]
        fits.HDUList([hdus[0].copy(), *images]).writeto(path)
    with pytest.raises(SpectrumReadError, match=r"holds 5 spectra"):
        read_spectrum(path)


def test_vo_ml_ingest_with_its_default_config_puts_a_boss_file_in_an_operators_table(tmp_path):
    db = tmp_path / "archive.duckdb"
    result = _vo_ml_ingest(BOSS_LITE, "--db", db, "--table", "sdss.boss")
    assert result.returncode == 0, result.stderr
    assert "1 ingested, 0 already there, 0 failed" in result.stdout
    _assert_one_row_as_read(db, "sdss.boss", BOSS_LITE)


def test_vo_ml_ingest_puts_an_apogee_visit_in_a_near_infrared_table(tmp_path):
    """The default grid stops at 1 micron, so an APOGEE archive names its own grid in a config."""
    import yaml

    optical = _vo_ml_ingest(APOGEE_VISIT, "--db", tmp_path / "optical.duckdb", "--table", "sdss.apogee")
    assert optical.returncode == 3 and "no good pixel on the grid 3000.0-10000.0 A" in optical.stdout
    config = tmp_path / "apogee.yaml"
    config.write_text(yaml.safe_dump({
        "table": "sdss.apogee", "collection": "APOGEE", "did_prefix": "ivo://vo-ml.example/apogee?",
        "grid": {"start": 15100.0, "stop": 17000.0, "pixels": 8192, "spacing": "log", "medium": "vacuum"},
        "preprocess": {"frame": "as-is", "normalise": "median"},
    }))
    db = tmp_path / "archive.duckdb"
    result = _vo_ml_ingest(APOGEE_VISIT, "--db", db, "--config", config)
    assert result.returncode == 0, result.stderr
    assert "1 ingested, 0 already there, 0 failed" in result.stdout
    _assert_one_row_as_read(db, "sdss.apogee", APOGEE_VISIT)


def _vo_ml_ingest(*arguments: object) -> subprocess.CompletedProcess:
    return vo_ml("ingest", *arguments)


def _assert_one_row_as_read(db: Path, table: str, fixture: Path) -> None:
    """The table holds one row, whose ObsCore values are those the reader gives."""
    spectrum = read_spectrum(fixture)
    meta = spectrum.meta
    with duckdb.connect(str(db), read_only=True) as connection:
        rows = connection.execute(
            "SELECT obs_id, target_name, s_ra, s_dec, em_min, em_max, em_res_power, instrument_name, t_min,"
            f" t_exptime, snr FROM {table}").fetchall()
    assert rows == [pytest.approx((
        fixture.stem, meta.target, meta.ra, meta.dec, spectrum.wavelength[0].to_value(u.m),
        spectrum.wavelength[-1].to_value(u.m), meta.resolving_power, meta.instrument, meta.mjd,
        meta.exptime, meta.snr,
    ))]
