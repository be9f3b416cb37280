"""The `vo-ml` commands as a user runs them, in subprocesses."""

from __future__ import annotations

import sys

import pyvo
from conftest import (
    DATA,
    HARPS_CUT,
    MILES,
    TABLE,
    Child,
    copy_archive,
    free_port,
    server_process,
    serving,
    vo_ml,
)


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
    first = vo_ml("demo", "--no-serve", "--workdir", workdir, "--source", miles_sources,
                  "--epochs", 60)
    assert first.returncode == 0, first.stderr
    assert f"{len(list(MILES.glob('*.fits')))} ingested, 0 already there, 1 failed" in first.stdout
    assert "ml_distance(embedding, 'ivo://vo-ml.example/miles?m0067')" in first.stdout
    assert "pyvo.dal.TAPService" in first.stdout
    second = vo_ml("demo", "--no-serve", "--workdir", workdir, "--source", miles_sources,
                   "--epochs", 60)
    assert second.returncode == 0, second.stderr
    assert "0 ingested" in second.stdout
    models = list((workdir / "models").iterdir())
    assert len(models) == 1 and models[0].name.startswith("dense16-")


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


def test_ingest_exit_codes_tell_a_full_a_partial_and_a_failed_run(tmp_path):
    good = MILES / "MILES_res2.50_star_m0067V.fits"
    bad = tmp_path / "broken.fits"
    bad.write_text("not a FITS file\n")
    into = ("--db", tmp_path / "codes.duckdb", "--table", "codes.spectra")
    failed = vo_ml("ingest", bad, *into)
    assert failed.returncode == 3, failed.stderr
    assert "0 ingested, 0 already there, 1 failed" in failed.stdout
    partial = vo_ml("ingest", good, bad, *into)
    assert partial.returncode == 1, partial.stderr
    assert "1 ingested, 0 already there, 1 failed" in partial.stdout
    done = vo_ml("ingest", good, *into)
    assert done.returncode == 0 and "0 ingested, 1 already there, 0 failed" in done.stdout
    described = vo_ml("ingest", "--help").stdout
    assert all(f"\n  {code} " in described for code in (0, 1, 2, 3, 4, 130))


def test_a_writer_on_a_served_archive_is_told_which_process_holds_it(archive, tmp_path):
    db = copy_archive(archive, tmp_path)
    with server_process(db) as (_, server):
        result = vo_ml("embed", "--model", archive["model_dir"], "--db", db, "--table", TABLE)
    assert result.returncode == 4, result.stderr
    assert str(db.resolve()) in result.stderr
    assert f"process {server.pid} (" in result.stderr and "vo-ml serve" in result.stderr
    assert f"kill {server.pid}" in result.stderr
    assert "Traceback" not in result.stderr and "Conflicting lock" not in result.stderr


def test_serving_an_archive_being_written_names_the_writer_and_offers_a_copy(tmp_path):
    db = tmp_path / "busy.duckdb"
    with Child([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                "print('open', flush=True); time.sleep(600)", db], tmp_path / "writer.log") as writer:
        writer.wait_until(lambda: "open" in writer.output(), "opening the database")
        result = vo_ml("serve", "--db", db, "--port", free_port())
    assert result.returncode == 4, result.stderr
    assert f"{db.resolve()} is in use by process {writer.pid} (" in result.stderr
    assert "serve a copy" in result.stderr and "Traceback" not in result.stderr


def test_a_demo_on_a_workdir_in_use_names_the_process_and_another_way(tmp_path, miles_sources):
    workdir = tmp_path / "demo"
    workdir.mkdir()
    db = workdir / "miles.duckdb"
    with Child([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                "print('open', flush=True); time.sleep(600)", db], tmp_path / "holder.log") as holder:
        holder.wait_until(lambda: "open" in holder.output(), "opening the database")
        result = vo_ml("demo", "--no-serve", "--workdir", workdir, "--source", miles_sources)
    assert result.returncode == 4, result.stderr
    assert f"{db.resolve()} is in use by process {holder.pid} (" in result.stderr
    assert f"kill {holder.pid}" in result.stderr and "another --workdir" in result.stderr
    assert "Traceback" not in result.stderr


#: Real files of four formats and instruments, none with a labels catalogue beside it.
OWN_ARCHIVE = [HARPS_CUT, DATA / "formats" / "xsl_spectrum_X0360_uvb.fits",
               DATA / "formats" / "spec-58397-EG014118N254444M01_sp03-031.fits",
               DATA / "formats" / "harps_cut_spectrum_dm.vot.xml", *sorted(MILES.glob("*.fits"))[:30]]
OWN_TABLE = "myarchive.spectra"


def test_an_operators_own_table_is_ingested_trained_embedded_and_served(tmp_path):
    """No YAML, no catalogue: the generic config and the spectrum template describe it."""
    db = tmp_path / "own.duckdb"
    ingested = vo_ml("ingest", *OWN_ARCHIVE, "--db", db, "--table", OWN_TABLE)
    assert ingested.returncode == 0, ingested.stderr
    assert f"{len(OWN_ARCHIVE)} ingested, 0 already there, 0 failed" in ingested.stdout
    trained = vo_ml("train", "--db", db, "--epochs", 3, "--models", tmp_path / "models")
    assert trained.returncode == 0, trained.stderr
    model = trained.stdout.strip().splitlines()[-1]
    embedded = vo_ml("embed", "--model", model, "--db", db)
    assert embedded.returncode == 0 and f"in {OWN_TABLE}" in embedded.stdout, embedded.stderr
    unlabelled = vo_ml("evaluate", "--db", db, "--out", tmp_path / "report")
    assert unlabelled.returncode == 2 and "Traceback" not in unlabelled.stderr
    assert f"{OWN_TABLE} has no teff, logg, feh column" in unlabelled.stderr
    harps = "ivo://vo-ml.example/myarchive.spectra?HARPS.2012-03-24T08:37:45.581_s1d_A_cut"
    with serving(db) as root:
        service = pyvo.dal.TAPService(f"{root}/tap")
        (described,) = service.search(
            f"SELECT description FROM TAP_SCHEMA.tables WHERE table_name = '{OWN_TABLE}'")
        assert "One row per spectrum" in described["description"]
        columns = {row["column_name"]: row for row in service.search(
            "SELECT column_name, unit, ucd, arraysize FROM TAP_SCHEMA.columns "
            f"WHERE table_name = '{OWN_TABLE}'")}
        assert (columns["s_ra"]["unit"], columns["s_ra"]["ucd"]) == ("deg", "pos.eq.ra")
        assert columns["embedding"]["arraysize"] == "2" and "teff" not in columns
        nearest = service.search(
            f"SELECT TOP 3 obs_publisher_did, obs_collection, ml_distance(embedding, '{harps}') AS d "
            f"FROM {OWN_TABLE} ORDER BY d").to_table()
        assert nearest["obs_publisher_did"][0] == harps and nearest["d"][0] == 0
        assert set(nearest["obs_collection"]) == {"myarchive"}
        (obscore,) = service.search(
            "SELECT COUNT(*) AS n FROM ivoa.obscore WHERE obs_collection = 'myarchive'")
        assert obscore["n"] == len(OWN_ARCHIVE)


def test_evaluate_refuses_no_seeds_and_an_empty_latent_space_before_training(tmp_path):
    """--seeds 0 once trained no model at all and reported baselines only; --latent-dims 0
    failed inside training. Both are one line, before anything is read or trained."""
    for option, value in (("--seeds", "0"), ("--latent-dims", "0")):
        done = vo_ml("evaluate", "--db", tmp_path / "none.duckdb", option, value, "--out", tmp_path / "out")
        assert done.returncode == 2 and f"{option} 0:" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()
