"""The service's settings: checked once when the app is built, the bad key named."""

from __future__ import annotations

import pytest

from vo_ml.service import create_app
from vo_ml.service.settings import Settings, SettingsError


@pytest.mark.parametrize(("given", "named"), [
    ({"QUERY_TIMEOUT": "soon"}, "QUERY_TIMEOUT='soon' is not a number above 0"),
    ({"ASYNC_MAX_RUNNING": 1.5}, "ASYNC_MAX_RUNNING=1.5 is not a whole number above 0"),
    ({"UPLOAD_LIMIT_BYTES": -1}, "UPLOAD_LIMIT_BYTES=-1 is not a whole number above 0"),
    ({"ARCHIVE_DB": ""}, "ARCHIVE_DB is empty"),
    ({"TAP_MAXREC_DEFAULT": 50, "TAP_MAXREC_LIMIT": 10}, "TAP_MAXREC_DEFAULT=50 is more than "
                                                         "TAP_MAXREC_LIMIT=10"),
])
def test_a_bad_setting_stops_the_app_at_creation_naming_its_key(tmp_path, given, named):
    with pytest.raises(SettingsError, match=named):
        create_app({"ARCHIVE_DB": str(tmp_path / "none.duckdb")} | given)


def test_a_bad_setting_from_the_environment_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("VO_ML_ASYNC_MAX_WAIT", "forever")
    with pytest.raises(SettingsError, match="VO_ML_ASYNC_MAX_WAIT"):
        create_app({"ARCHIVE_DB": str(tmp_path / "none.duckdb")})


def test_settings_take_numbers_as_text_and_keep_their_types():
    settings = Settings.from_config({"QUERY_TIMEOUT": "0.5", "TAP_MAXREC_LIMIT": "100",
                                     "TAP_MAXREC_DEFAULT": 10, "SSA_TABLE": "miles.spectra"})
    assert settings.query_timeout == 0.5 and settings.tap_maxrec_limit == 100
    assert isinstance(settings.tap_maxrec_limit, int) and settings.ssa_table == "miles.spectra"
    assert settings.jobs_folder == "vo_ml.duckdb.jobs" and settings.models_dir is None
