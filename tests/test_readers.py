"""Reading real spectra: wavelengths, units and metadata agree with the headers."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from conftest import HARPS_CUT, MILES

from vo_ml.spectra.readers import SpectrumReadError, read_spectrum


def test_miles_file_gives_its_linear_air_grid_in_the_rest_frame():
    spectrum = read_spectrum(MILES / "MILES_res2.50_star_m0067V.fits")
    assert spectrum.wavelength.unit == u.AA
    assert spectrum.wavelength.size == 4300
    assert spectrum.wavelength[0].value == pytest.approx(3540.5)
    assert np.diff(spectrum.wavelength.value) == pytest.approx(0.9)
    assert spectrum.wavelength[-1].value == pytest.approx(3540.5 + 0.9 * 4299)
    assert (spectrum.medium, spectrum.frame) == ("air", "rest")
    assert spectrum.meta.resolving_power == pytest.approx(5475.05 / 2.5, rel=1e-3)
    assert not spectrum.mask.any()


def test_truncated_miles_star_masks_its_zero_flux_tail():
    spectrum = read_spectrum(MILES / "MILES_res2.50_star_m0970V.fits")
    raw = fits.getdata(MILES / "MILES_res2.50_star_m0970V.fits")
    assert spectrum.mask.sum() == (raw <= 0).sum() > 0
    assert np.isnan(spectrum.flux[spectrum.mask]).all()


def test_harps_s1d_metadata_matches_the_header():
    spectrum = read_spectrum(HARPS_CUT)
    header = fits.getheader(HARPS_CUT)
    assert spectrum.wavelength[0].value == pytest.approx(header["CRVAL1"])
    assert spectrum.wavelength[1].value - spectrum.wavelength[0].value == pytest.approx(0.01)
    assert spectrum.wavelength.size == header["NAXIS1"] == 20000
    assert spectrum.frame == "barycentric"
    meta = spectrum.meta
    assert (meta.target, meta.instrument) == ("HD128621", "HARPS")
    assert (meta.ra, meta.dec) == pytest.approx((219.875072, -60.8301))
    assert meta.mjd == pytest.approx(56010.35955534)
    assert meta.exptime == pytest.approx(9.9941)
    assert len(meta.checksum) == 64


def test_a_file_that_is_not_fits_is_refused_with_its_name(tmp_path):
    path = tmp_path / "spectrum.fits"
    path.write_text("SIMPLE? no, a text file")
    with pytest.raises(SpectrumReadError, match="not a FITS file") as error:
        read_spectrum(path)
    assert error.value.path == str(path)


@pytest.mark.parametrize(
    ("header", "data", "reason"),
    [
        ({"CDELT1": 1.0}, np.ones(10), "CRVAL1 is missing"),
        ({"CRVAL1": 4000.0}, np.ones(10), "neither CDELT1 nor CD1_1"),
        ({"CRVAL1": 4000.0, "CDELT1": -1.0}, np.ones(10), "do not increase"),
        ({"CRVAL1": 4000.0, "CDELT1": 1.0}, np.full(10, np.nan), "NaN or infinite everywhere"),
        ({"CRVAL1": 4000.0, "CDELT1": 1.0, "CUNIT1": "furlong"}, np.ones(10), "unknown wavelength unit"),
    ],
)
def test_broken_wcs_images_are_refused_with_the_reason(tmp_path, header, data, reason):
    path = tmp_path / "broken.fits"
    hdu = fits.PrimaryHDU(data)
    hdu.header.update(header)
    hdu.writeto(path)
    with pytest.raises(SpectrumReadError, match=reason):
        read_spectrum(path)


def test_log_linear_wcs_is_exponentiated(tmp_path):
    path = tmp_path / "log.fits"
    hdu = fits.PrimaryHDU(np.ones(5))
    hdu.header.update({"CRVAL1": 3.6, "CDELT1": 0.001, "DC-FLAG": 1})
    hdu.writeto(path)
    wavelength = read_spectrum(path).wavelength.value
    assert wavelength == pytest.approx(10 ** (3.6 + 0.001 * np.arange(5)))
