"""``vo-ml``: thin commands over the library, one per pipeline step, plus the demo.

Every command reports bad input as one line naming what is wrong and exits non-zero; none of
them prints a traceback for a user's mistake. The exit codes are :class:`Exit`'s.
"""

from __future__ import annotations

import argparse
import enum
import itertools
import logging
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import yaml
from pyvo.dal import DALAccessError

if TYPE_CHECKING:  # the pipeline loads only for the commands that run it
    from vo_ml.pipeline import IngestSummary

__all__ = ["main"]


class Exit(enum.IntEnum):
    """Exit statuses, so scripts can tell a partial ingest from a failed one. What each means
    is said once, in :data:`EXIT_MEANINGS`, which ``vo-ml ingest --help`` prints; README.rst
    (Commands) lists the same. ``adql check`` exits SOME_FAILED for a query that is not valid."""

    OK = 0
    SOME_FAILED = 1
    USAGE = 2
    ALL_FAILED = 3
    IN_USE = 4
    INTERRUPTED = 130


EXIT_MEANINGS = {
    Exit.OK: "every file ingested or already there, or nothing to do",
    Exit.SOME_FAILED: "some files failed (listed, and kept in vo_ml.ingest_report); the rest were "
                      "ingested or already there",
    Exit.USAGE: "bad arguments or input (a missing file or folder, a config that does not load); "
                "nothing was changed",
    Exit.ALL_FAILED: "files were given but every one failed; nothing was ingested",
    Exit.IN_USE: "the database is in use by another process, which the message names (a DuckDB "
                 "file has one writing process, or reading ones, never both)",
    Exit.INTERRUPTED: "interrupted (Ctrl-C); run the same command again to finish",
}


def main(argv: Sequence[str] | None = None) -> int:
    from vo_ml.archive.backend import ArchiveInUse

    parser = _parser()
    arguments = parser.parse_args(argv)
    _configure_logging()
    try:
        return arguments.run(arguments)
    except ArchiveInUse as error:
        print(f"vo-ml {arguments.command}: {error}; {_in_use_advice(arguments, error.pid)}",
              file=sys.stderr)
        return Exit.IN_USE
    except (OSError, ValueError, RuntimeError, KeyError, yaml.YAMLError, duckdb.Error,
            DALAccessError) as error:
        what = f"missing key {error}" if isinstance(error, KeyError) else error
        print(f"vo-ml {arguments.command}: {what}", file=sys.stderr)
        return Exit.USAGE
    except KeyboardInterrupt:
        return Exit.INTERRUPTED


#: vo_ml's own loggers (progress, training, the access log) say what happens; others only warn.
LOG_LEVEL = logging.INFO
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _configure_logging() -> None:
    """Every command logs through one handler on stderr, in one format. astropy's logger, which
    has a handler of its own, goes through it too: with both, each astropy warning (W50 for a
    unit astropy cannot read, say) was printed twice."""
    from astropy import log as astropy_log

    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("vo_ml").setLevel(LOG_LEVEL)
    for handler in list(astropy_log.handlers):
        astropy_log.removeHandler(handler)
    astropy_log.setLevel(logging.WARNING)


def _in_use_advice(arguments: argparse.Namespace, pid: int) -> str:
    """What to do about a database process ``pid`` holds, for the command that found it so."""
    if arguments.command == "serve":
        return ("wait until that process has finished writing, or serve a copy meanwhile "
                f"(cp {arguments.db} copy.duckdb && vo-ml serve --db copy.duckdb)")
    if arguments.command == "demo":
        return (f"stop that process (kill {pid}), e.g. the demo serving this folder, or build "
                "this demo in another --workdir")
    return f"stop that process (kill {pid}) or wait until it has finished, then run this again"


def _exit_codes_help() -> str:
    """The exit codes as ``vo-ml ingest --help`` lists them, wrapped to 80 columns."""
    return "exit codes:\n" + "\n".join(
        textwrap.fill(text, 80, initial_indent=f"  {code.value:<3}  ", subsequent_indent=" " * 7)
        for code, text in EXIT_MEANINGS.items())


_TABLE_HELP = "the table of spectra (default: the archive's, when it has one only)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vo-ml", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="build the MILES demo archive and serve it over TAP")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--workdir", type=Path, default=Path("vo-ml-demo"))
    demo.add_argument("--source", type=Path,
                      help="a folder of MILES FITS files and paramsMILES_v9.1.txt to use instead "
                           "of the copy fetched from PyPI")
    demo.add_argument("--epochs", type=int,
                      help="most training epochs (default: the dense16 config's); a quicker demo")
    demo.add_argument("--no-serve", action="store_true", help="build everything, then exit")
    demo.set_defaults(run=_demo)

    ingest = commands.add_parser("ingest", help="read spectrum files into a TAP table",
                                 epilog=_exit_codes_help(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ingest.add_argument("sources", nargs="+",
                        help="files or folders of spectra, or SSA service URLs whose query "
                             "parameters (POS, SIZE, BAND, TIME, TARGETNAME, MAXREC) select spectra")
    ingest.add_argument("--db", type=Path, required=True)
    ingest.add_argument("--config", default="generic",
                        help="archive config (name or YAML path): generic (any spectra, the "
                             "default), miles, harps, synthetic, or your own")
    ingest.add_argument("--table", help="table to fill, SCHEMA.NAME, e.g. myarchive.spectra "
                                        "(default: the config's)")
    ingest.add_argument("--batch-size", type=int, default=128,
                        help="files read in parallel and written together (memory grows with it)")
    ingest.add_argument("--workers", type=int, default=2, help="processes reading files")
    ingest.set_defaults(run=_ingest)

    synth = commands.add_parser("synth", help="write labelled synthetic HARPS-like SDP spectra")
    synth.add_argument("--n", type=int, required=True, help="how many spectra")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--seed", type=int, default=1)
    synth.add_argument("--workers", type=int, default=2)
    synth.set_defaults(run=_synth)

    train = commands.add_parser("train", help="train a model on an ingested table")
    train.add_argument("--db", type=Path, required=True)
    train.add_argument("--table", help=_TABLE_HELP)
    train.add_argument("--config", default="dense2d", help="model config (name or YAML path)")
    train.add_argument("--models", type=Path, help="folder for models (default: beside --db)")
    train.add_argument("--latent-dim", type=int, help="latent dimension (default: the config's)")
    train.add_argument("--epochs", type=int, help="most epochs (default: the config's)")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser(
        "evaluate", help="train models without held-out stars and report how physical their "
                         "latent neighbours are, against PCA and raw flux")
    evaluate.add_argument("--db", type=Path, required=True)
    evaluate.add_argument("--table", help=_TABLE_HELP)
    evaluate.add_argument("--out", type=Path, default=Path("evaluation"), help="report folder")
    evaluate.add_argument("--configs", nargs="+", default=["dense2d", "dense16", "conv"],
                          help="model configs (names or YAML paths)")
    evaluate.add_argument("--latent-dims", type=int, nargs="+",
                          help="latent dimensions to train each config at whose latent space is "
                               "not the 2-D map (default: its own)")
    evaluate.add_argument("--seeds", type=int, default=1,
                          help="train each model with this many seeds, to see how far they agree")
    evaluate.add_argument("--epochs", type=int, help="most epochs for every model")
    evaluate.add_argument("--held-out", type=float, default=0.2, help="share of stars held out")
    evaluate.add_argument("--models", type=Path, help="folder for models (default: beside --db)")
    evaluate.add_argument("--real-spectra", type=Path, metavar="DIR",
                          help="folder of probe spectra from other instruments (the layout of "
                               "real_spectra: harps_s1d/, lamost_laspec/, mangadap_test_spectra/) "
                               "for same-star retrieval; without it that section is left out")
    evaluate.add_argument("--invariance-stars", type=int, default=100, metavar="N",
                          help="archive spectra read again from their files and perturbed for the "
                               "invariance curves (0: leave them out)")
    evaluate.set_defaults(run=_evaluate)

    embed = commands.add_parser("embed", help="write a model's ML columns into the table")
    embed.add_argument("--model", type=Path, required=True, help="a folder made by 'vo-ml train'")
    embed.add_argument("--db", type=Path, required=True)
    embed.add_argument("--table", help=_TABLE_HELP)
    embed.add_argument("--scheduler", help="dask.distributed scheduler address, tcp://HOST:PORT")
    embed.add_argument("--workers", type=int,
                       help="start a local Dask cluster of this many worker processes")
    embed.set_defaults(run=_embed)

    evaluate_tags = commands.add_parser(
        "evaluate-tags", help="measure the tags, their intervals, the anomaly scores and what "
                              "the latent space knows; write a report")
    evaluate_tags.add_argument("--db", type=Path, required=True)
    evaluate_tags.add_argument("--table", help=_TABLE_HELP)
    evaluate_tags.add_argument("--config", default=None,
                               help="model config name or YAML file (default: the demo's)")
    evaluate_tags.add_argument("--models", type=Path,
                               help="folder of trained models, reused when already trained, as "
                                    "'vo-ml evaluate' trains them (default: models/ beside --db)")
    evaluate_tags.add_argument("--out", type=Path, default=Path("docs/evaluation/tags"))
    evaluate_tags.add_argument("--nuisance-stars", type=int, default=100,
                               help="original files the nuisance probes change (0: none)")
    evaluate_tags.set_defaults(run=_evaluate_tags)

    tag = commands.add_parser(
        "tag", help="predict the catalogue's labels, with calibrated intervals, and anomaly "
                    "scores for every embedded spectrum")
    tag.add_argument("--db", type=Path, required=True)
    tag.add_argument("--table", help=_TABLE_HELP)
    tag.set_defaults(run=_tag)

    index = commands.add_parser(
        "index", help="build the nearest-neighbour index of a table's embeddings")
    index.add_argument("--db", type=Path, required=True)
    index.add_argument("--table", help=_TABLE_HELP)
    index.add_argument("--metric", choices=["l2", "cosine"], default="l2",
                       help="l2 serves ml_distance, cosine ml_cosine_distance")
    index.set_defaults(run=_index)

    hips = commands.add_parser(
        "hips", help="write the latent map as HiPS: density and mean-label image surveys and a "
                     "catalogue of the spectra, for Aladin and other HiPS viewers")
    hips.add_argument("--db", type=Path, required=True)
    hips.add_argument("--table", help=_TABLE_HELP)
    hips.add_argument("--out", type=Path, required=True,
                      help="folder for the surveys (replaced whole when it holds an earlier HiPS)")
    hips.add_argument("--order", type=int, default=3,
                      help="deepest image order; order 3 has pixels of about 0.9 degree of the "
                           "map's 180 by 120 degree patch, each order deeper halves them")
    hips.add_argument("--label", default="teff",
                      help="numeric column whose mean per pixel makes the second image survey")
    hips.set_defaults(run=_hips)

    registry = commands.add_parser(
        "registry", help="print the service's registry records, or check them as the Registry of "
                         "Registries would before publishing")
    registry.add_argument("--db", type=Path, required=True)
    registry.add_argument("--base-url", required=True,
                          help="the service's public root URL, as SERVICE_BASE_URL gives it")
    registry.add_argument("--config", type=Path,
                          help="the registry file (default: REGISTRY_CONFIG, else "
                               "ARCHIVE_DB.registry.toml)")
    registry.add_argument("--check", action="store_true",
                          help="validate every OAI-PMH answer and record; exit 1 on an error")
    registry.add_argument("--identifier", help="print only this record")
    registry.set_defaults(run=_registry)

    serve = commands.add_parser("serve", help="serve the archive over TAP")
    serve.add_argument("--db", type=Path, required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--threads", type=int, default=8)
    serve.set_defaults(run=_serve)

    adql = commands.add_parser("adql", help="check ADQL, or show the SQL it becomes")
    adql_commands = adql.add_subparsers(dest="adql_command", required=True)
    check = adql_commands.add_parser("check", help="exit 0 for valid ADQL, 1 with a message")
    check.add_argument("query")
    check.add_argument("--db", type=Path, help="also check names against this archive")
    check.add_argument("--udf", action="append", default=[], metavar="FORM",
                       help="accept another service's user-defined function, declared by its "
                            "TAPRegExt form, e.g. 'ivo_healpix_index(order INTEGER, ra DOUBLE, "
                            "dec DOUBLE) -> BIGINT' (repeatable; never accepted by queries run here)")
    check.set_defaults(run=_adql_check)
    sql = adql_commands.add_parser("sql", help="print the SQL a query runs as (dry run)")
    sql.add_argument("query")
    sql.add_argument("--db", type=Path, required=True)
    sql.set_defaults(run=_adql_sql)
    return parser


def _archive_config(name: str, table: str | None = None) -> object:
    from vo_ml.pipeline import ArchiveConfig
    from vo_ml.resources import config_file, load_yaml

    config = load_yaml(config_file(name))
    if table:
        config["table"] = table
    return config, ArchiveConfig.from_dict(config)


#: Files in a source folder that are never spectra: catalogues, notes, scripts, and what vo-ml itself
#: writes (databases, their write-ahead logs, unfinished downloads).
_NOT_SPECTRA = (".txt", ".db", ".md", ".csv", ".duckdb", ".wal", ".part", ".json", ".py")


def _spectrum_files(sources: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            files.extend(sorted(p for p in source.rglob("*") if p.is_file() and _may_be_spectrum(p, source)))
        elif source.exists():
            files.append(source)
        else:
            raise FileNotFoundError(f"{source}: no such file or folder")
    return files


def _may_be_spectrum(path: Path, root: Path) -> bool:
    """False for hidden files, Zarr stores and the file kinds in ``_NOT_SPECTRA``."""
    parts = path.relative_to(root).parts
    return not (any(p.startswith(".") or p.endswith(".zarr") for p in parts)
                or path.name.endswith(_NOT_SPECTRA))


def _describer(config: dict, sources: Sequence[Path]) -> Callable | None:
    """The catalogue the archive config names: ``miles`` (the MILES table) or ``csv``
    (a labels.csv beside the files, as ``vo-ml synth`` writes)."""
    catalogue = config.get("catalogue")
    if catalogue is None or not sources:
        return None
    from vo_ml.spectra.labels import CsvDescriber
    from vo_ml.spectra.miles import PARAMETER_TABLE, MilesDescriber

    table, describer = {"miles": (PARAMETER_TABLE, MilesDescriber),
                        "csv": ("labels.csv", lambda folder: CsvDescriber(folder / "labels.csv"))}[catalogue]
    for source in sources:
        folder = source if source.is_dir() else source.parent
        if (folder / table).is_file():
            return describer(folder)
    raise FileNotFoundError(f"the archive config takes labels from {table}, but no source folder holds it")


def _ingest(arguments: argparse.Namespace) -> int:
    from vo_ml.pipeline import ingest

    raw, config = _archive_config(arguments.config, arguments.table)
    services = [s for s in arguments.sources if s.startswith(("http://", "https://"))]
    local = [Path(s) for s in arguments.sources if s not in services]
    downloaded, failures = _fetch_from_ssa(services, arguments.db.parent / "ssa_cache")
    summary = ingest(_spectrum_files(local) + downloaded, arguments.db, config,
                     _describer(raw, local), arguments.batch_size, arguments.workers, failures)
    print(summary)
    return _ingest_exit(summary)


def _ingest_exit(summary: IngestSummary) -> Exit:
    """OK with no failure; SOME_FAILED when others went in or were there; else ALL_FAILED."""
    if not summary.failed:
        return Exit.OK
    return Exit.SOME_FAILED if summary.ingested or summary.skipped else Exit.ALL_FAILED


def _fetch_from_ssa(services: Sequence[str], cache: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Download (or find in ``cache``) every spectrum each SSA query URL selects."""
    from urllib.parse import parse_qsl, urlsplit, urlunsplit

    from vo_ml.spectra.ssa import fetch_ssa

    paths: list[Path] = []
    failures: list[tuple[str, str]] = []
    for service in services:
        parts = urlsplit(service)
        query = {k.upper(): v for k, v in parse_qsl(parts.query)}
        pos = tuple(float(v) for v in query["POS"].split(";")[0].split(",")) if "POS" in query else None
        band = tuple(float(v) for v in query["BAND"].split("/")) if "BAND" in query else None
        time_range = tuple(query["TIME"].split("/")) if "TIME" in query else None
        found, failed = fetch_ssa(
            urlunsplit(parts._replace(query="")), cache, pos=pos,
            size=float(query["SIZE"]) if "SIZE" in query else None, band=band, time=time_range,
            target=query.get("TARGETNAME"), maxrec=int(query["MAXREC"]) if "MAXREC" in query else None)
        paths.extend(found)
        failures.extend(failed)
    return paths, failures


def _table_of(arguments: argparse.Namespace) -> str:
    """``--table``, or else the archive's table of spectra when it has exactly one."""
    if arguments.table:
        return arguments.table
    from vo_ml.pipeline import spectrum_tables

    tables = spectrum_tables(arguments.db)
    if len(tables) != 1:
        held = f"the tables {', '.join(tables)}" if tables else "no table of spectra"
        raise ValueError(f"{arguments.db} holds {held}: name one with --table")
    return tables[0]


def _synth(arguments: argparse.Namespace) -> int:
    from vo_ml.spectra.synthetic import generate_archive

    labels = generate_archive(arguments.out, arguments.n, arguments.seed, arguments.workers)
    print(f"{arguments.n} spectra in {arguments.out}, labels in {labels}")
    return 0


def _train(arguments: argparse.Namespace) -> int:
    from vo_ml.pipeline import train_model
    from vo_ml.resources import config_file, load_yaml

    models = arguments.models or arguments.db.parent / "models"
    config = load_yaml(config_file(arguments.config))
    if arguments.latent_dim is not None:
        config["latent_dim"] = arguments.latent_dim
    if arguments.epochs is not None:
        config["training"]["epochs"] = arguments.epochs
    model_dir = train_model(arguments.db, _table_of(arguments), config, models)
    print(model_dir)
    return 0


def _evaluate(arguments: argparse.Namespace) -> int:
    from vo_ml.pipeline import evaluate_models
    from vo_ml.resources import config_file, load_yaml

    if arguments.seeds < 1:
        raise ValueError(f"--seeds {arguments.seeds}: train each model with 1 or more seeds")
    if any(latent < 1 for latent in arguments.latent_dims or ()):
        raise ValueError(f"--latent-dims {' '.join(map(str, arguments.latent_dims))}: give latent "
                         "dimensions of 1 or more")
    configs = []
    for name in arguments.configs:
        config = load_yaml(config_file(name))
        if arguments.epochs is not None:
            config["training"]["epochs"] = arguments.epochs
        latents = [2] if config["latent_dim"] == 2 else arguments.latent_dims or [config["latent_dim"]]
        for latent, seed in itertools.product(latents, range(arguments.seeds)):
            configs.append(config | {"latent_dim": latent, "training": config["training"] | {
                "seed": int(config["training"]["seed"]) + seed}})
    models = arguments.models or arguments.db.parent / "models"
    print(evaluate_models(arguments.db, _table_of(arguments), configs, models, arguments.out,
                          arguments.held_out, arguments.real_spectra, arguments.invariance_stars))
    return 0


def _index(arguments: argparse.Namespace) -> int:
    from vo_ml.pipeline import build_neighbour_index

    table = _table_of(arguments)
    path = build_neighbour_index(arguments.db, table, arguments.metric)
    print(f"wrote the {arguments.metric} neighbour index of {table}.embedding to {path}")
    return 0


def _embed(arguments: argparse.Namespace) -> int:
    from vo_ml.pipeline import embed

    if arguments.workers is not None and arguments.workers < 1:
        raise ValueError(f"--workers {arguments.workers}: give 1 or more worker processes")
    if arguments.scheduler and arguments.workers:
        raise ValueError("give --scheduler (an existing cluster) or --workers (a local one), not both")
    table = _table_of(arguments)
    changed = embed(arguments.db, table, arguments.model, arguments.scheduler, arguments.workers)
    print(f"{'wrote' if changed else 'already had'} the ML columns of {arguments.model.name} "
          f"in {table}")
    return 0


def _evaluate_tags(arguments: argparse.Namespace) -> int:
    from vo_ml.pipeline import DEMO_MODEL, evaluate_tagging
    from vo_ml.resources import config_file, load_yaml

    config = load_yaml(config_file(arguments.config or DEMO_MODEL))
    models = arguments.models or arguments.db.parent / "models"
    report = evaluate_tagging(arguments.db, _table_of(arguments), config, models, arguments.out,
                              nuisance_stars=arguments.nuisance_stars)
    print(f"wrote {report}")
    return 0


def _tag(arguments: argparse.Namespace) -> int:
    from vo_ml.pipeline import tag

    table = _table_of(arguments)
    summary = tag(arguments.db, table)
    print(summary or f"{table} is tagged already, from the model that embedded it")
    return 0


def _hips(arguments: argparse.Namespace) -> int:
    from vo_ml.pipeline import hips

    print(hips(arguments.db, _table_of(arguments), arguments.out, arguments.order, arguments.label))
    return 0


def _registry(arguments: argparse.Namespace) -> int:
    from vo_ml.service import create_app
    from vo_ml.service.registry import published_document
    from vo_ml.service.registry_check import check_registry

    root = arguments.base_url.rstrip("/")
    config = {"ARCHIVE_DB": str(arguments.db), "SERVICE_BASE_URL": root}
    if arguments.config:
        config["REGISTRY_CONFIG"] = str(arguments.config)
    app = create_app(config)
    if arguments.check:
        report = check_registry(app, root)
        print(report)
        return 1 if report.errors else 0
    with app.app_context():
        print(published_document(root, arguments.identifier))
    return 0


def _serve(arguments: argparse.Namespace) -> int:
    serve(arguments.db, arguments.host, arguments.port, arguments.threads)
    return 0


def serve(db: Path, host: str, port: int, threads: int = 8) -> None:
    """Serve with waitress, a production WSGI server, never the Flask development server."""
    import waitress

    from vo_ml.service import create_app

    app = create_app({"ARCHIVE_DB": str(db)})
    print(f"serving TAP on http://{host}:{port}/tap (Ctrl-C stops)", flush=True)
    waitress.serve(app, host=host, port=port, threads=threads, ident="vo_ml")


def _adql_check(arguments: argparse.Namespace) -> int:
    from vo_ml import adql

    schema = _published_schema(arguments.db) if arguments.db else None
    try:
        adql.check(arguments.query, schema, arguments.udf)
    except adql.AdqlError as error:
        print(error, file=sys.stderr)
        return 1
    print("valid ADQL")
    return 0


def _adql_sql(arguments: argparse.Namespace) -> int:
    from vo_ml import adql

    try:
        print(adql.translate(arguments.query, _published_schema(arguments.db)).sql)
    except adql.AdqlError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


def _published_schema(db: Path) -> object:
    from vo_ml.archive.backends import open_backend

    with open_backend(db, read_only=True) as backend:
        return backend.read_tap_schema()


def _demo(arguments: argparse.Namespace) -> int:
    """Build the MILES demo archive (reusing what a past run built), then serve it."""
    from vo_ml.pipeline import build_demo

    demo = build_demo(arguments.workdir.resolve(), arguments.source, arguments.epochs,
                      announce=lambda step: print(f"== {step}", flush=True))
    print(demo.summary)
    print("== step wall times: " + ", ".join(f"{k} {v:.1f} s" for k, v in demo.timings.items()))
    _print_examples(demo.db, demo.table, arguments.host, arguments.port)
    if not arguments.no_serve:
        serve(demo.db, arguments.host, arguments.port)
    return 0


def _print_examples(db: Path, table: str, host: str, port: int) -> None:
    from urllib.parse import quote

    from vo_ml.archive.backends import open_backend

    with open_backend(db, read_only=True) as backend:
        did = backend.execute(
            f"SELECT obs_publisher_did FROM {table} WHERE target_name = 'HD010700'").rows()
    reference = did[0][0] if did else "ivo://vo-ml.example/miles?m0001"
    query = (f"SELECT TOP 10 obs_publisher_did, target_name, teff, logg, feh,\n"
             f"       ml_distance(embedding, '{reference}') AS d\n"
             f"FROM {table}\nWHERE teff BETWEEN 4000 AND 7000\nORDER BY d")
    print(f"""
Example ADQL (the stars most like tau Ceti in the latent space):

{query}

From Python with pyvo:

    import pyvo
    service = pyvo.dal.TAPService("http://{host}:{port}/tap")
    print(service.search('''{query}''').to_table())

Every spectrum is tagged, with 68% and 95% intervals, and scored for oddity:

SELECT TOP 20 obs_publisher_did, target_name, teff, ml_teff, ml_teff_lo, ml_teff_hi, ml_anomaly
FROM {table}
ORDER BY ml_anomaly DESC

In TOPCAT: VO > Table Access Protocol (TAP) Query, TAP URL http://{host}:{port}/tap

Every row leads on through DataLink (TOPCAT's Activation Actions, pyvo's iter_datalinks()):
its file, a preview, its reconstruction, similar spectra and why they are similar:

    http://{host}:{port}/datalink/links?ID={quote(reference, safe="")}
""", flush=True)


if __name__ == "__main__":
    sys.exit(main())
