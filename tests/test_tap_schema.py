"""TAP_SCHEMA comes from the packaged YAML files, and names the model behind the ML columns."""

from __future__ import annotations

import pytest

from vo_ml.archive import tap_schema
from vo_ml.resources import config_file, packaged


def test_packaged_yaml_files_are_installed_with_the_package():
    names = {p.name for p in packaged("tap_schema").iterdir()}
    assert {"miles.yaml", "ml_columns.yaml", "obscore_columns.yaml", "tap_schema.yaml"} <= names
    assert config_file("dense2d").is_file() and config_file("miles").is_file()
    with pytest.raises(FileNotFoundError, match="dense2d.yaml"):
        config_file("no-such-config")


def test_every_published_column_is_described_with_a_votable_datatype():
    schema = tap_schema.load(model="m-1", latent_dim=2)
    spectra = schema.table("MILES.Spectra")
    assert spectra is not None
    required = {"obs_publisher_did", "obs_id", "target_name", "s_ra", "s_dec", "em_min", "em_max",
                "em_res_power", "dataproduct_type", "calib_level", "obs_collection",
                "access_url", "access_format", "teff", "logg", "feh", "embedding", "ml_x",
                "ml_y", "ml_recon_error", "ml_model"}
    assert required <= set(spectra.column_names)
    for column in spectra.columns:
        assert column.description and column.datatype in tap_schema.SQL_TYPES
    assert spectra.column("s_ra").unit == "deg" and spectra.column("s_ra").ucd == "pos.eq.ra"


def test_ml_columns_are_sized_and_named_from_the_model():
    table = tap_schema.load().table("miles.spectra")
    assert tap_schema.placeholders(table.columns) == {"model", "latent_dim"}
    filled = table.with_values(model="dense2d-abc", latent_dim=16)
    embedding = filled.column("embedding")
    assert embedding.arraysize == "16" and embedding.sql_type == "FLOAT[16]"
    assert "dense2d-abc" in embedding.description
    assert not tap_schema.placeholders(filled.columns)


def test_unknown_column_group_is_named(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "schema: s\ntables:\n  - name: t\n    column_groups: [nothing]\n")
    with pytest.raises(ValueError, match="nothing"):
        tap_schema.load(tmp_path)


def test_a_table_no_file_names_is_described_by_the_spectrum_template():
    schema = tap_schema.load().describing(["myarchive.spectra", "miles.spectra"])
    own = schema.table("MyArchive.Spectra")
    assert own is not None and own.type == "table" and "One row per spectrum" in own.description
    miles = schema.table("miles.spectra")
    assert set(own.column_names) == set(miles.column_names) - {"teff", "logg", "feh"}
    assert own.column("snr").ucd == "stat.snr" and own.column("em_min").unit == "m"
    assert tap_schema.placeholders(own.columns) == {"model", "latent_dim"}
    (created,) = [s for s in schema.schemas if s.name == "myarchive"]
    assert created.description and [t.name for t in created.tables] == ["myarchive.spectra"]
    assert tap_schema.load().describing(["miles.spectra"]).tables == tap_schema.load().tables


def test_a_missing_template_is_named(tmp_path):
    (tmp_path / "s.yaml").write_text("schema: s\ntables:\n  - name: t\n    columns: []\n")
    with pytest.raises(ValueError, match="template 'spectra'.*other.t"):
        tap_schema.load(tmp_path).describing(["other.t"])
