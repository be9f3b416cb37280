"""The `vo-ml` commands as a user runs them, in subprocesses."""

from __future__ import annotations

import subprocess

from conftest import MILES, TABLE, VO_ML


def vo_ml(*arguments):
    return subprocess.run([VO_ML, *map(str, arguments)], capture_output=True, text=True,
                          cwd=MILES.parent, timeout=600)


def test_adql_check_exit_codes():
    assert vo_ml("adql", "check", "SELECT TOP 3 obs_id FROM miles.spectra").returncode == 0
    bad = vo_ml("adql", "check", "SELECT TOP 3 obs_id FRM miles.spectra")
    assert bad.returncode == 1 and "syntax error" in bad.stderr and "Traceback" not in bad.stderr


def test_adql_check_against_an_archive_names_the_unknown_column(archive):
    result = vo_ml("adql", "check", f"SELECT snrr FROM {TABLE}", "--db", archive["db"])
    assert result.returncode == 1 and "'snrr'" in result.stderr
    sql = vo_ml("adql", "sql", f"SELECT TOP 2 teff FROM {TABLE}", "--db", archive["db"])
    assert sql.returncode == 0 and "LIMIT 2" in sql.stdout


def test_demo_builds_then_reuses_its_archive(tmp_path, miles_sources):
    workdir = tmp_path / "demo"
    first = vo_ml("demo", "--no-serve", "--workdir", workdir, "--source", miles_sources)
    assert first.returncode == 0, first.stderr
    assert f"{len(list(MILES.glob('*.fits')))} ingested, 0 already there, 1 failed" in first.stdout
    assert "ml_distance(embedding, 'ivo://vo-ml.example/miles?m0067')" in first.stdout
    assert "pyvo.dal.TAPService" in first.stdout
    second = vo_ml("demo", "--no-serve", "--workdir", workdir, "--source", miles_sources)
    assert second.returncode == 0, second.stderr
    assert "0 ingested" in second.stdout
    models = list((workdir / "models").iterdir())
    assert len(models) == 1 and models[0].name.startswith("dense2d-")


def test_ingest_of_a_missing_source_is_one_clear_line(tmp_path):
    result = vo_ml("ingest", tmp_path / "nowhere", "--db", tmp_path / "a.duckdb")
    assert result.returncode == 2
    assert "nowhere: no such file or folder" in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_a_missing_database(tmp_path):
    result = vo_ml("serve", "--db", tmp_path / "missing.duckdb", "--port", "1")
    assert result.returncode == 2 and "vo-ml ingest" in result.stderr


def test_ingest_from_an_ssa_service_downloads_caches_and_ingests(tap_url, tmp_path):
    service = tap_url.removesuffix("/tap") + "/ssa?TARGETNAME=HD010700"
    db = tmp_path / "remote.duckdb"
    first = vo_ml("ingest", service, "--db", db, "--config", "miles")
    assert first.returncode == 0, first.stderr
    assert "1 ingested, 0 already there, 0 failed" in first.stdout
    cached = list((tmp_path / "ssa_cache").iterdir())
    assert len(cached) == 1
    again = vo_ml("ingest", service, "--db", db, "--config", "miles")
    assert "0 ingested, 1 already there" in again.stdout
    assert [p.stat().st_mtime for p in (tmp_path / "ssa_cache").iterdir()] == [cached[0].stat().st_mtime]
