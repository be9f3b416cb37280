"""The steps from spectrum files to a served table, each usable on its own.

``ingest`` reads files into catalogue rows and the spectrum store, ``train`` fits a model on the
store, ``embed`` writes the model's columns into the table and republishes TAP_SCHEMA. Every step
skips work already done, so a second run of the demo reuses what the first built.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import dask
import numpy as np
from astropy import units as u

from vo_ml.archive import tap_schema
from vo_ml.archive.backend import ML_COLUMNS, Backend, MlColumns
from vo_ml.archive.backends import open_backend
from vo_ml.archive.hips import MIN_ORDER, HipsSummary, read_latent_map, write_hips
from vo_ml.archive.neighbours import NeighbourIndex, build_index, description_path
from vo_ml.progress import progress
from vo_ml.spectra.access import file_format, relative_access_url
from vo_ml.spectra.grid import Grid, Preprocessing
from vo_ml.spectra.labels import RADIAL_VELOCITY
from vo_ml.spectra.readers import read_spectrum
from vo_ml.spectra.record import Spectrum, SpectrumReadError, der_snr, file_checksum
from vo_ml.spectra.store import SpectrumStore

__all__ = ["ArchiveConfig", "IngestSummary", "DemoArchive", "ingest", "train_model", "embed",
           "store_path", "build_demo", "evaluate_models", "archive_schema", "spectrum_tables",
           "hips"]

FILES_PER_BATCH = 128

#: Extra catalogue values for one file, e.g. labels from a source catalogue.
Describer = Callable[[Path, Spectrum], dict]
#: A table name as ADQL reaches it without quotes: schema and table, regular identifiers.
_QUALIFIED_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\.[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ArchiveConfig:
    """Where spectra go and how their rows are named, from an archive config such as miles.yaml."""

    table: str
    collection: str
    did_prefix: str
    preprocessing: Preprocessing
    calib_level: int = 2

    @classmethod
    def from_dict(cls, config: dict) -> ArchiveConfig:
        """The config's values; ``{table}`` and ``{schema}`` in the collection and the DID
        prefix become the table's qualified name and its schema (as configs/generic.yaml has)."""
        table = config["table"]
        if not _QUALIFIED_NAME.fullmatch(table):
            raise ValueError(f"table {table!r}: name it SCHEMA.TABLE, each a letter followed by "
                             "letters, digits or underscores (e.g. myarchive.spectra)")
        names = {"table": table, "schema": table.split(".")[0]}
        return cls(table, config["collection"].format(**names), config["did_prefix"].format(**names),
                   Preprocessing.from_config(config), int(config.get("calib_level", 2)))

    @property
    def grid(self) -> Grid:
        return self.preprocessing.grid


@dataclass
class IngestSummary:
    ingested: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.ingested} ingested, {self.skipped} already there, {len(self.failed)} failed"
        return "\n".join([text, *(f"  failed: {path}: {reason}" for path, reason in self.failed)])


def store_path(db: Path, table: str) -> Path:
    """The spectrum store of ``table``, beside the database file."""
    return Path(db).with_name(f"{Path(db).stem}.{table}.zarr")


def ingest(
    files: Sequence[Path], db: Path, config: ArchiveConfig, describe: Describer | None = None,
    files_per_batch: int = FILES_PER_BATCH, workers: int = 2,
    fetch_failures: Sequence[tuple[str, str]] = (),
) -> IngestSummary:
    """Read ``files`` into the table and its spectrum store; skip files already ingested.

    A file that cannot be read or put on the grid is recorded with its reason in the
    ``vo_ml.ingest_report`` table and the run carries on, as is each (source, reason) in
    ``fetch_failures``: spectra a remote service could not deliver. Files are read in parallel a batch at
    a time, so memory stays flat however many there are. Each batch is written arrays first,
    rows second; a run killed anywhere leaves at most a tail of store rows without table rows,
    which the next run cuts off before it ingests those files again (see :func:`_reconcile`).
    Reading and preprocessing run as Dask tasks in ``workers`` processes (FITS parsing holds
    the GIL, so threads would not scale), one task per worker and batch, so the configuration,
    the catalogue and the set of done checksums travel to a worker once per batch, not per file.
    The next batch is read while this one is written, so at most two batches are in memory.
    """
    summary = IngestSummary()
    backend = open_backend(db)
    try:
        schema = archive_schema(backend, config.table)
        table = _spectrum_table(schema, config.table, db)
        backend.ensure_table(table, [c for c in table.columns if c.name not in ML_COLUMNS])
        backend.publish_tap_schema(schema)
        store = SpectrumStore(store_path(db, config.table), config.grid,
                             config.preprocessing.steps())
        _reconcile(store, backend.ingested_dids(table.name))
        backend.record_failures([(source, None, reason) for source, reason in fetch_failures])
        summary.failed.extend(fetch_failures)
        done = backend.ingested_checksums(table.name)
        known_dids = set(store.dids)
        batches = [files[i:i + files_per_batch] for i in range(0, len(files), files_per_batch)]
        with (progress(len(files), f"ingest {config.table}", "file") as bar,
              _worker_pool(workers) as pool,
              ThreadPoolExecutor(1) as reader):
            def prepare(batch: Sequence[Path]) -> Future:
                return reader.submit(_prepare_in_parallel, batch, pool, workers, config, describe, done)

            pending = prepare(batches[0]) if batches else None
            for index, batch in enumerate(batches):
                prepared = pending.result()
                if index + 1 < len(batches):
                    pending = prepare(batches[index + 1])
                _write_batch(prepared, backend, store, table, known_dids, done, summary)
                bar.update(len(batch))
        backend.publish_tap_schema(schema)
    finally:
        backend.close()
    return summary


def archive_schema(backend: Backend, *tables: str) -> tap_schema.TapSchema:
    """What the archive publishes: the packaged tap_schema files, plus the operator's own
    tables, described by the spectrum template: those it publishes already, and ``tables``."""
    published = backend.read_tap_schema() if backend.table_columns("TAP_SCHEMA.tables") \
        else tap_schema.TapSchema()
    return tap_schema.load().describing([*(t.name for t in published.tables.values()), *tables])


def _spectrum_table(schema: tap_schema.TapSchema, name: str, db: Path) -> tap_schema.Table:
    """The table ``name`` of ``schema``, which must be a table of spectra (ObsCore columns)."""
    table = schema.table(name)
    if table is None:
        raise ValueError(f"{db} has no table {name}: ingest spectra into it first")
    if not table.holds_spectra:
        raise ValueError(f"{name} is published as something other than a table of spectra: "
                         "give a table name of your own, e.g. --table myarchive.spectra")
    return table


def spectrum_tables(db: Path) -> list[str]:
    """The tables of spectra the archive publishes (not views such as ivoa.obscore)."""
    with open_backend(db, read_only=True) as backend:
        return [t.name for t in backend.read_tap_schema().tables.values() if t.holds_spectra]


def _prepare_in_parallel(batch: Sequence[Path], pool: ProcessPoolExecutor | None, workers: int,
                         config: ArchiveConfig, describe: Describer | None, done: set[str]) -> list[dict]:
    """One Dask task per worker, each preparing a contiguous share of the batch, in file order.

    ``chunksize=1`` makes Dask hand each task to its own process; by default it groups tasks
    and a batch would run in one process only. Without a pool the batch is prepared here.
    """
    if pool is None:
        return _prepare_share(batch, config, describe, done)
    shares = [list(s) for s in np.array_split(np.asarray(batch, dtype=object), workers) if len(s)]
    tasks = [dask.delayed(_prepare_share)(share, config, describe, done) for share in shares]
    results = dask.compute(*tasks, scheduler="processes", pool=pool, chunksize=1)
    return [item for share in results for item in share]


def _prepare_share(files: Sequence[Path], config: ArchiveConfig, describe: Describer | None,
                   done: set[str]) -> list[dict]:
    return [_prepare(f, config, describe, done) for f in files]


def _exit_with_ingest() -> None:
    """Worker initializer: end this worker when the ingest process that started it ends, even by
    SIGKILL, or it would wait forever on a queue nobody writes to.

    A thread waits on the parent's sentinel, which the kernel closes when that process ends.
    Not PR_SET_PDEATHSIG: Linux sends it when the thread that started the worker ends, and that
    was the reader thread, which ends before the pool shuts down. It killed the idle worker, which
    holds the pool's call-queue lock while it waits; a worker not yet far enough to have asked for
    the signal then waited for that lock forever, and so did the pool's shutdown (issue 14).
    """
    threading.Thread(target=_exit_when_parent_ends, name="exit with the ingest", daemon=True).start()


def _exit_when_parent_ends() -> None:
    multiprocessing.parent_process().join()
    os._exit(1)


def _worker_pool(workers: int) -> contextlib.AbstractContextManager[ProcessPoolExecutor | None]:
    """``workers`` processes from multiprocessing's fork server, or none (files are then prepared
    in this process) when one worker is asked for.

    Not forked from this process, which has threads by now (DuckDB, zarr, tqdm, perhaps
    TensorFlow): a child forked from it can inherit a lock one of them held and wait for it
    forever. The fork server is a fresh process that has imported this module once, so workers
    forked from it start fast and clean.
    """
    if workers < 2:
        return contextlib.nullcontext()
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_exit_with_ingest)


def _reconcile(store: SpectrumStore, table_dids: set[str]) -> None:
    """Cut the store back to the rows the table holds: a killed run may have appended arrays
    whose rows it never inserted. Those are always the last ones, as batches are written in
    order, and the files they came from are not marked ingested, so they are read again."""
    dids = store.dids
    orphans = [i for i, did in enumerate(dids) if did not in table_dids]
    if orphans:
        store.truncate(orphans[0])


def _prepare(path: Path, config: ArchiveConfig, describe: Describer | None, done: set[str]) -> dict:
    """One file's catalogue row and gridded arrays, or the reason it failed."""
    checksum = None
    try:
        checksum = file_checksum(path)
        if checksum in done:
            return {"skipped": True}
        spectrum = read_spectrum(path)
        row = _catalogue_row(path, spectrum, config)
        if describe is not None:
            row.update(describe(path, spectrum))
        flux, mask = config.preprocessing.apply(spectrum, row.pop(RADIAL_VELOCITY, None))
    except (SpectrumReadError, ValueError, OSError) as error:
        reason = error.reason if isinstance(error, SpectrumReadError) else str(error)
        return {"failed": (str(path), checksum, reason)}
    row["obs_publisher_did"] = config.did_prefix + row["obs_id"]
    row["access_url"] = relative_access_url(row["obs_publisher_did"])
    return {"row": row, "flux": flux, "mask": mask, "source": (str(Path(path).resolve()), checksum)}


def _catalogue_row(path: Path, spectrum: Spectrum, config: ArchiveConfig) -> dict:
    """What the file says of itself; the S/N is estimated from the flux where it says none.
    The access URL follows from the publisher DID, which a catalogue may still rename."""
    wavelength = spectrum.wavelength.to_value(u.m)
    meta = spectrum.meta
    return {
        "obs_id": Path(path.name.removesuffix(".gz")).stem, "target_name": meta.target,
        "s_ra": meta.ra, "s_dec": meta.dec,
        "em_min": float(wavelength[0]), "em_max": float(wavelength[-1]),
        "em_res_power": meta.resolving_power, "dataproduct_type": "spectrum",
        "calib_level": config.calib_level, "obs_collection": config.collection,
        "access_format": file_format(path), "instrument_name": meta.instrument,
        "t_min": meta.mjd, "t_exptime": meta.exptime,
        "snr": meta.snr if meta.snr is not None else der_snr(spectrum.flux),
    }


def _write_batch(prepared: Iterable[dict], backend: Backend, store: SpectrumStore,
                 table: tap_schema.Table, known_dids: set[str], done: set[str],
                 summary: IngestSummary) -> None:
    """Arrays first, then the rows that make them visible, so a crash never leaves rows without
    spectra. A file whose bytes were already ingested in this run (a copy) counts as skipped."""
    good, failures = [], []
    for item in prepared:
        if item.get("skipped") or item.get("source", ("", None))[1] in done:
            summary.skipped += 1
        elif "failed" in item:
            failures.append(item["failed"])
        elif item["row"]["obs_publisher_did"] in known_dids:
            failures.append((item["source"][0], item["source"][1],
                             f"duplicate publisher DID {item['row']['obs_publisher_did']}"))
        else:
            known_dids.add(item["row"]["obs_publisher_did"])
            done.add(item["source"][1])
            good.append(item)
    backend.record_failures(failures)
    summary.failed.extend((path, reason) for path, _, reason in failures)
    if not good:
        return
    dids = [g["row"]["obs_publisher_did"] for g in good]
    store.append(dids, np.stack([g["flux"] for g in good]), np.stack([g["mask"] for g in good]))
    backend.insert_rows(table, [g["row"] for g in good],
                        [(*g["source"], did) for g, did in zip(good, dids, strict=True)])
    summary.ingested += len(good)


def data_checksum(backend: Backend, table: str) -> str:
    """One checksum over every file ingested into ``table``, naming the data a model was trained on."""
    return hashlib.sha256("".join(sorted(backend.ingested_checksums(table))).encode()).hexdigest()


def train_model(db: Path, table: str, config: dict, models_dir: Path) -> Path:
    """Train (or reuse) a model on the table's spectrum store; return its folder."""
    from vo_ml.ml.training import train  # TensorFlow loads only for the steps that need it

    backend = open_backend(db)
    try:
        store = SpectrumStore(store_path(db, table))
        targets = dict(backend.execute(
            f"SELECT obs_publisher_did, target_name FROM {table}").rows())
        checksum = data_checksum(backend, table)
    finally:
        backend.close()
    return train(store, config, [targets.get(d) for d in store.dids], checksum, models_dir)


def _rows_without_embedding(backend: Backend, table: str) -> int:
    """Rows ingested since the last embedding, which a re-run must fill in."""
    return backend.execute(f"SELECT count(*) - count(embedding) FROM {table}").rows()[0][0]


def embed(db: Path, table: str, model_dir: Path, scheduler: str | None = None,
          workers: int | None = None) -> bool:
    """Write the model's ML columns into ``table``; False when every row already has this model's.

    Encoding runs on the Dask cluster at ``scheduler``, on a local cluster of ``workers``
    processes, or on local threads (see :func:`vo_ml.ml.embedding.embed_store`).
    """
    from vo_ml.ml.cards import load_card
    from vo_ml.ml.embedding import embed_store

    card = load_card(model_dir)
    backend = open_backend(db)
    try:
        schema = archive_schema(backend)
        spectra = _spectrum_table(schema, table, db)
        current = backend.current_model(table)
        if current and current["model_id"] == card["model_id"] and not _rows_without_embedding(
                backend, table):
            return False
        store = SpectrumStore(store_path(db, table))
        embeddings = embed_store(store, model_dir, scheduler=scheduler, workers=workers)
        # Where the model is and how the spectra were prepared, so that the service can encode
        # uploaded spectra as these were (ml_encode).
        recorded = {**card, "location": str(Path(model_dir).resolve()),
                    "preprocess": store.preprocess}
        backend.write_ml_columns(spectra, MlColumns(
            embeddings.model_id, embeddings.dids, embeddings.latent, embeddings.map_xy,
            embeddings.recon_error, recorded))
        backend.publish_tap_schema(schema)
        build_index(backend, db, table, "embedding")
    finally:
        backend.close()
    return True


@dataclass
class TagSummary:
    """What :func:`tag` did: the rows tagged, each label's served regressor with the out-of-fold
    median absolute error of every candidate (in the learnt scale), and the oddest rows."""

    rows: int
    served: dict[str, str]
    scores: dict[str, dict[str, float]]
    oddest: list[tuple[str, float]]

    def __str__(self) -> str:
        lines = [f"tagged {self.rows} rows"]
        for label, served in self.served.items():
            lines.append(f"{label}: serving {served}")
            lines += [f"  {error:.4g}  {title}" for title, error in self.scores[label].items()]
        lines.append("highest ml_anomaly: " + ", ".join(f"{did} ({score:.2f})"
                                                       for did, score in self.oddest))
        return "\n".join(lines)


def tag(db: Path, table: str) -> TagSummary | None:
    """Learn every label the table's catalogue gives and it declares a tag column for
    (``ml_<label>``), predict it with conformal bounds for every embedded row, score how
    anomalous each row is (``ml_anomaly``), and write those columns; keep the tagging beside
    the archive (:func:`vo_ml.ml.tags.tagging_path`), for the service to tag uploads alike.
    None when every embedded row is tagged already, from the model that embedded it."""
    import pyarrow as pa

    from vo_ml.ml.anomaly import NEIGHBOURS, AnomalyScale
    from vo_ml.ml.tags import Tagging, fit_tagger, tagging_path

    backend = open_backend(db)
    try:
        spectra = _spectrum_table(archive_schema(backend), table, db)
        card = backend.current_model(table)
        if card is None:
            raise ValueError(f"{table} has no embeddings to tag from: run 'vo-ml embed' first")
        if _tagged_already(backend, db, table, card["model_id"]):
            return None
        rows = _tagged_rows(backend, db, spectra, card)
        index = _current_neighbour_index(backend, db, table)
        ids, distances = (found[:, 1:] for found in index.nearest(rows.latent, NEIGHBOURS + 1))
        anomaly = AnomalyScale.of_archive(rows.recon_error, rows.noise, rows.row_ids, ids,
                                          distances)
        tagger, out_of_fold = fit_tagger(rows.labels, rows.views, rows.groups,
                                         rows.latent.shape[1]) if rows.labels else (None, {})
        values = (tagger.tag(rows.views, out_of_fold) if tagger else {}) | {
            "ml_anomaly": anomaly.score(rows.recon_error, rows.noise, ids, distances)}
        backend.write_derived_columns(spectra, rows.dids, pa.table(values), card["model_id"])
        backend.publish_tap_schema(archive_schema(backend))
        Tagging(card["model_id"], tagger, anomaly).save(tagging_path(db, table))
    finally:
        backend.close()
    served = tagger.labels if tagger else {}
    oddest = np.argsort(-values["ml_anomaly"])[:5]
    return TagSummary(len(rows.dids), {label: t.candidate for label, t in served.items()},
                      {label: t.scores for label, t in served.items()},
                      [(rows.dids[i], float(values["ml_anomaly"][i])) for i in oddest])


def _tagged_already(backend: Backend, db: Path, table: str, model_id: str) -> bool:
    """Whether the table's tags and the tagging kept beside it are the current model's, for
    every embedded row."""
    from vo_ml.ml.tags import Tagging, tagging_path

    kept = Tagging.load(tagging_path(db, table))
    if kept is None or kept.model_id != model_id or "ml_anomaly" not in backend.table_columns(table):
        return False
    return not backend.execute(f"SELECT count(embedding) - count(ml_anomaly) FROM {table}").rows()[0][0]


def _current_neighbour_index(backend: Backend, db: Path, table: str) -> NeighbourIndex:
    """The table's L2 index of its embeddings, built again unless it is up to date."""
    path = description_path(db, table, "embedding", "l2")
    index = NeighbourIndex.load(path)
    if index is None or not index.is_current(backend):
        index = NeighbourIndex.load(build_index(backend, db, table, "embedding"))
    return index


def _model_folder(card: dict) -> Path:
    """The folder of the model a card describes, where it was when it embedded the table."""
    folder = Path(card.get("location", ""))
    if not (folder / "model_card.json").is_file():
        raise ValueError(f"model {card['model_id']} is no longer at {folder}: train it again "
                         "with 'vo-ml train', or embed with another model")
    return folder


@dataclass
class _TaggedRows:
    """The embedded rows of a table as tagging reads them, in store order."""

    dids: list[str]
    row_ids: np.ndarray
    groups: np.ndarray
    latent: np.ndarray
    recon_error: np.ndarray
    noise: np.ndarray
    labels: dict[str, np.ndarray]
    views: dict[str, np.ndarray]


def _tagged_rows(backend: Backend, db: Path, spectra: tap_schema.Table, card: dict) -> _TaggedRows:
    """The embedded rows' stars, embeddings, reconstruction errors, noise and labels (those
    the table declares a tag column for), and their flux at the model's sampling, read from the
    store kept at that sampling (as training and embedding read it)."""
    from vo_ml.ml.anomaly import noise_of_snr
    from vo_ml.ml.cards import load_card
    from vo_ml.ml.models import downsampling
    from vo_ml.ml.tags import spectra_view

    existing = backend.table_columns(spectra.name)
    labels = [name for name in existing if not name.startswith("ml_")
              and spectra.column(f"ml_{name}") is not None]
    snr = "snr" if "snr" in existing else "NULL"
    result = backend.execute(
        f"SELECT obs_publisher_did, coalesce(target_name, obs_publisher_did), embedding, "
        f"ml_recon_error, {snr}, {backend.row_id}, {', '.join(labels) or 'NULL'} "
        f"FROM {spectra.name} WHERE embedding IS NOT NULL")
    by_did = {did: row for row, did in enumerate(result.columns[0].data)}
    store = SpectrumStore(store_path(db, spectra.name))
    stored = [row for row, did in enumerate(store.dids) if did in by_did]
    order = np.array([by_did[did] for did in np.asarray(store.dids)[stored]], dtype=int)
    sampled_store = store.coarsened(downsampling(load_card(_model_folder(card))["config"]))
    flux, mask = sampled_store.read(0, len(sampled_store))
    sampled = spectra_view(flux[stored], mask[stored])
    column = lambda i: np.ma.filled(result.columns[i].astype(float), np.nan)[order]  # noqa: E731
    latent = np.stack(result.columns[2].data[order]).astype(np.float32)
    return _TaggedRows(
        [str(did) for did in result.columns[0].data[order]],
        np.asarray(result.columns[5].data[order], dtype=np.int64),
        np.asarray(result.columns[1].data[order], dtype=str), latent, column(3),
        noise_of_snr(column(4)), {name: column(6 + i) for i, name in enumerate(labels)},
        {"latent": latent, "spectra": sampled})


def hips(db: Path, table: str, out: Path, order: int = MIN_ORDER,
         label: str | None = "teff") -> HipsSummary:
    """Write the table's latent map as HiPS into ``out`` (:mod:`vo_ml.archive.hips`): image
    surveys of the density of spectra and of the mean ``label``, and a catalogue of them."""
    with open_backend(db, read_only=True) as backend:
        latent = read_latent_map(backend, table, label)
    return write_hips(latent, out, order)


def build_neighbour_index(db: Path, table: str, metric: str = "l2") -> Path:
    """(Re)build the nearest-neighbour index of ``table``'s embeddings beside the archive."""
    backend = open_backend(db, read_only=True)
    try:
        return build_index(backend, db, table, "embedding", metric)
    finally:
        backend.close()


def evaluate_models(db: Path, table: str, configs: Sequence[dict], models_dir: Path, out: Path,
                    held_out_fraction: float = 0.2, real_spectra: Path | None = None,
                    invariance_stars: int = 100) -> Path:
    """Train each config without a held-out share of the stars, then write the evaluation report
    (:func:`vo_ml.ml.report.evaluate`) into ``out``: with same-star retrieval of the probe files
    in ``real_spectra`` when given, and the invariance of ``invariance_stars`` archive spectra
    read again from the files they were ingested from. Return the report's path."""
    from vo_ml.ml.evaluation import LABELS
    from vo_ml.ml.probes import ProbeSet
    from vo_ml.ml.report import evaluate
    from vo_ml.ml.training import split_by_star, train

    if not 0 < held_out_fraction < 1:
        raise ValueError(f"held-out share {held_out_fraction}: give a fraction between 0 and 1")
    probes = ProbeSet.in_folder(real_spectra) if real_spectra is not None else None
    backend = open_backend(db, read_only=True)
    try:
        unlabelled = [name for name in LABELS if name not in backend.table_columns(table)]
        if unlabelled:
            raise ValueError(f"{table} has no {', '.join(unlabelled)} column: evaluate scores the "
                             "neighbours of held-out stars by their labels, so it needs a table "
                             "with Teff, log g and [Fe/H], such as the MILES demo's")
        columns = backend.execute(
            f"SELECT obs_publisher_did, target_name, teff, logg, feh FROM {table}").columns
        checksum = data_checksum(backend, table)
        store = SpectrumStore(store_path(db, table))
        sources = _original_files(backend, store.dids)
    finally:
        backend.close()
    order = _in_store_order(columns[0].data, store, table)
    targets = [columns[1].data[i] for i in order]
    labels = {name: np.ma.filled(columns[i].astype(float), np.nan)[order]
              for i, name in ((2, "teff"), (3, "logg"), (4, "feh"))}
    held_out = split_by_star(targets, held_out_fraction, salt="evaluate")
    training_rows = np.flatnonzero(~held_out)
    models = [train(store, config, targets, f"{checksum}:held-out {held_out_fraction}", models_dir,
                    rows=training_rows) for config in configs]
    return evaluate(store, labels, targets, models, held_out, out, probes, sources, invariance_stars)


def evaluate_tagging(db: Path, table: str, config: dict, models_dir: Path, out: Path,
                     held_out_fraction: float = 0.2, nuisance_stars: int = 100) -> Path:
    """Write the report of :mod:`vo_ml.ml.tag_report` into ``out``: the model of ``config``
    trained without a held-out share of the stars (the split ``vo-ml evaluate`` makes, so its
    models are reused), the table's labels cross-validated by star, anomalies injected into the
    held-out spectra, and probes of the labels and of nuisances applied to ``nuisance_stars``
    original files (0: none). Return the report's path."""
    from vo_ml.ml.anomaly import noise_of_snr
    from vo_ml.ml.embedding import encode_rows, latent_vectors, model_sampled
    from vo_ml.ml.evaluation import LABELS
    from vo_ml.ml.invariance import sample
    from vo_ml.ml.probes import store_preprocessing
    from vo_ml.ml.tag_report import TagData, evaluate_tags, nuisance_samples
    from vo_ml.ml.tags import spectra_view
    from vo_ml.ml.training import split_by_star, train

    backend = open_backend(db, read_only=True)
    try:
        existing = backend.table_columns(table)
        labels = [name for name in LABELS if name in existing]
        if not labels:
            raise ValueError(f"{table} has no teff, logg or feh column: the tags are learnt "
                             "from a catalogue's labels, such as the MILES demo's")
        extra = [c if c in existing else "NULL" for c in ("snr", "ml_anomaly")]
        result = backend.execute(f"SELECT obs_publisher_did, target_name, {', '.join(extra)}, "
                                 f"{', '.join(labels)} FROM {table}")
        checksum = data_checksum(backend, table)
        store = SpectrumStore(store_path(db, table))
        sources = _original_files(backend, store.dids)
    finally:
        backend.close()
    order = _in_store_order(result.columns[0].data, store, table)
    column = lambda i: np.ma.filled(result.columns[i].astype(float), np.nan)[order]  # noqa: E731
    targets = [result.columns[1].data[i] for i in order]
    held_out = split_by_star(targets, held_out_fraction, salt="evaluate")
    model_dir = train(store, config, targets, f"{checksum}:held-out {held_out_fraction}",
                      models_dir, rows=np.flatnonzero(~held_out))
    flux, mask = store.read(0, len(store))
    latent, recon = encode_rows(flux, mask, model_dir)
    groups = np.array([t or f"row-{i}" for i, t in enumerate(targets)], dtype=str)
    data = TagData(
        names=[str(t) for t in targets], groups=groups,
        labels={name: column(4 + i) for i, name in enumerate(labels)},
        noise=noise_of_snr(column(2)), latent=latent, recon_error=recon, flux=flux, mask=mask,
        wavelength=store.grid.centres, held_out=held_out,
        spectra_view=lambda f, m: spectra_view(*model_sampled(f, m, model_dir)),
        encode=lambda f, m: encode_rows(f, m, model_dir), spectral_types=_spectral_types(sources))
    nuisances = None
    if nuisance_stars:
        rows = sample(sorted(sources), nuisance_stars)
        originals = [read_spectrum(sources[row]) for row in rows]
        nuisances = nuisance_samples(originals, groups[rows], store_preprocessing(store),
                                     lambda f, m: latent_vectors(f, m, model_dir))
    served = column(3)
    return evaluate_tags(data, out, nuisances, served if np.isfinite(served).any() else None)


def _spectral_types(sources: dict[int, Path]) -> dict[str, str] | None:
    """Spectral types by star name, where the files come from a MILES folder (the parameter
    table beside them or one level up, as the demo's download keeps it)."""
    from vo_ml.spectra.miles import PARAMETER_TABLE, MilesDescriber

    folders = {folder for path in sources.values() for folder in path.parents[:2]}
    folder = next((f for f in sorted(folders) if (f / PARAMETER_TABLE).is_file()), None)
    if folder is None:
        return None
    return {star.name: star.sptype or "" for star in MilesDescriber(folder).stars.values()}


def _in_store_order(dids: Sequence[str], store: SpectrumStore, table: str) -> np.ndarray:
    """For each stored spectrum, the position of its row among ``dids`` (a query's rows of
    ``table``); every stored spectrum must have one."""
    row_of = {did: i for i, did in enumerate(dids)}
    missing = [did for did in store.dids if did not in row_of]
    if missing:
        raise ValueError(f"{len(missing)} stored spectra have no row in {table} (e.g. {missing[0]}): "
                         "an ingest was interrupted; run 'vo-ml ingest' again to finish it")
    return np.array([row_of[did] for did in store.dids], dtype=int)


def _original_files(backend: Backend, dids: Sequence[str]) -> dict[int, Path]:
    """The file each store row was ingested from, by row, for those still where they were."""
    found = {}
    for row, did in enumerate(dids):
        source = backend.ingested_source(did)
        if source is not None and Path(source[0]).is_file():
            found[row] = Path(source[0])
    return found


#: The model config the demo serves: the one that answers similarity best in
#: docs/evaluation/report.md, with a map from the plane of its first two components.
DEMO_MODEL = "dense16"


@dataclass
class DemoArchive:
    """What :func:`build_demo` made, and the wall time of each step in seconds."""

    db: Path
    table: str
    summary: IngestSummary
    timings: dict[str, float]


def build_demo(workdir: Path, source: Path | None = None, epochs: int | None = None,
               announce: Callable[[str], None] = lambda step: None) -> DemoArchive:
    """The MILES demo archive in ``workdir``: fetch (unless ``source`` is a MILES folder), ingest,
    train the DEMO_MODEL (at most ``epochs`` epochs, else the config's), embed and tag; each
    step reuses what an earlier run built.

    ``announce`` is called with each step's name before it starts, for progress messages.
    """
    from vo_ml.resources import config_file, load_yaml
    from vo_ml.spectra.miles import MilesDescriber, fetch_miles, miles_files

    timings: dict[str, float] = {}

    def step(name: str, action: Callable[[], object]) -> object:
        announce(name)
        started = time.perf_counter()
        value = action()
        timings[name] = time.perf_counter() - started
        return value

    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "miles.duckdb"
    folder = source or step("fetch MILES", fetch_miles)
    config = ArchiveConfig.from_dict(load_yaml(config_file("miles")))
    summary = step("ingest", lambda: ingest(miles_files(folder), db, config, MilesDescriber(folder)))
    model_config = load_yaml(config_file(DEMO_MODEL))
    if epochs is not None:
        model_config["training"]["epochs"] = epochs
    model_dir = step("train", lambda: train_model(db, config.table, model_config, workdir / "models"))
    step("embed", lambda: embed(db, config.table, model_dir))
    step("tag", lambda: tag(db, config.table))
    return DemoArchive(db, config.table, summary, timings)
