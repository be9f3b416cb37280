"""The chunked array store of preprocessed spectra that training and embedding stream from.

A Zarr group beside the archive database holds, row for row, the publisher DID, the flux on the
store's grid and the mask. Chunks hold whole spectra, so a batch of rows is one read. The DID array
is written last on every append: a run killed mid-append leaves longer flux arrays than DIDs, and
the store counts only rows that have a DID, so a half-written row is never read.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

import numpy as np
import zarr

from vo_ml.files import replacing_folder
from vo_ml.progress import tracked
from vo_ml.spectra.grid import Grid, downsample

__all__ = ["SpectrumStore"]

#: A chunk holds whole spectra and about this many bytes of flux: small enough that appending a
#: batch rewrites little, large enough that training reads few files.
CHUNK_BYTES = 8 << 20


def rows_per_chunk(pixels: int) -> int:
    """Spectra per chunk for spectra of ``pixels`` float32 values."""
    return max(1, min(1024, CHUNK_BYTES // (4 * pixels)))


class SpectrumStore:
    """Preprocessed spectra on one grid, appended in batches, read in row chunks."""

    def __init__(self, path: str | Path, grid: Grid | None = None,
                 preprocess: dict | None = None) -> None:
        """Open the store at ``path``, or create it for spectra on ``grid`` prepared by the
        ``preprocess`` steps (an archive config's, recorded so that spectra from elsewhere can be
        prepared the same way)."""
        self.path = Path(path)
        if not (self.path / "zarr.json").exists():
            if grid is None:
                raise FileNotFoundError(
                    f"no spectrum store at {self.path}: run 'vo-ml ingest' first to create it"
                )
            self._create(grid, preprocess or {})
        self._group = zarr.open_group(str(self.path), mode="a")
        self.grid = Grid(**self._group.attrs["grid"])
        if grid is not None and grid != self.grid:
            raise ValueError(
                f"spectrum store {self.path} holds spectra on grid {self.grid.as_dict()}, not "
                f"{grid.as_dict()}: use a new store for a new grid"
            )

    def _create(self, grid: Grid, preprocess: dict) -> None:
        """Build the empty store beside its final place and rename it in: a kill while creating
        never leaves a store without its arrays."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with replacing_folder(self.path) as scratch:
            group = zarr.open_group(str(scratch), mode="w")
            group.attrs["grid"] = grid.as_dict()
            group.attrs["preprocess"] = preprocess
            chunk = (rows_per_chunk(grid.pixels), grid.pixels)
            # Normalised flux is noise-like and barely compresses: storing it raw keeps ingest fast.
            group.create_array("flux", shape=(0, grid.pixels), dtype="f4", chunks=chunk, compressors=None)
            group.create_array("mask", shape=(0, grid.pixels), dtype="bool", chunks=chunk)
            group.create_array("did", shape=(0,), dtype=str, chunks=(4096,))

    @property
    def preprocess(self) -> dict:
        """The preprocessing steps of the archive config the spectra were ingested with."""
        return dict(self._group.attrs.get("preprocess") or {})

    def __len__(self) -> int:
        return self._group["did"].shape[0]

    @property
    def flux(self) -> zarr.Array:
        return self._group["flux"]

    @property
    def mask(self) -> zarr.Array:
        return self._group["mask"]

    @property
    def dids(self) -> np.ndarray:
        return np.asarray(self._group["did"][:], dtype=object)

    def append(self, dids: list[str], flux: np.ndarray, mask: np.ndarray) -> None:
        """Add rows; flux and mask first, the DIDs that make them visible last."""
        rows = len(self)
        for name, values in (("flux", flux), ("mask", mask)):
            array = self._group[name]
            array.resize((rows + len(dids), self.grid.pixels))
            array[rows:] = values
        self._group["did"].append(np.asarray(dids, dtype=str))

    def truncate(self, rows: int) -> None:
        """Drop every row from ``rows`` on: the DIDs first, so no reader sees a row half-gone."""
        self._group["did"].resize((rows,))
        for name in ("flux", "mask"):
            self._group[name].resize((rows, self.grid.pixels))

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Flux and mask of rows ``start`` to ``stop``."""
        return self.flux[start:stop], self.mask[start:stop]

    def coarsened(self, factor: int) -> SpectrumStore:
        """This store with ``factor`` pixels averaged into one, as a model of that sampling sees
        it: a store of its own beside this one, brought up to date with it on every call.

        The dense family reads a quarter of the bytes this way, and skips the averaging, which
        cost more than the model itself when every epoch or embedding did it again.
        """
        if factor == 1:
            return self
        coarse = SpectrumStore(self.path.with_name(f"{self.path.stem}.x{factor}.zarr"),
                               self.grid.coarsened(factor))
        with open(coarse.path.with_name(coarse.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            coarse._follow(self, factor)
        return coarse

    def _follow(self, source: SpectrumStore, factor: int) -> None:
        """Append the rows of ``source`` this store lacks, after cutting back any it holds that
        ``source`` no longer has (an ingest may have cut an unfinished tail)."""
        dids, source_dids = self.dids, source.dids
        common = min(dids.size, source_dids.size)
        matches = dids[:common] == source_dids[:common]
        same = common if matches.all() else int(np.argmin(matches))
        if same < dids.size:
            self.truncate(same)
        rows = rows_per_chunk(source.grid.pixels) * max(1, 64 // rows_per_chunk(source.grid.pixels))
        starts = range(same, len(source), rows)
        for start in tracked(starts, f"sampling x{factor}", "batch", disable=len(starts) < 2):
            stop = min(start + rows, len(source))
            flux, mask = downsample(*source.read(start, stop), factor)
            self.append(list(source_dids[start:stop]), flux, mask)
