"""The spectrum store's coarser copies, which the dense family trains on and encodes from."""

from __future__ import annotations

import numpy as np

from vo_ml.spectra.grid import Grid, downsample
from vo_ml.spectra.store import SpectrumStore


def _rows(rng: np.random.Generator, n: int, pixels: int) -> tuple[np.ndarray, np.ndarray]:
    mask = rng.random((n, pixels)) < 0.2
    flux = np.where(mask, 0, rng.normal(1, 0.1, (n, pixels))).astype(np.float32)
    return flux, mask


def test_a_coarsened_store_follows_its_source_row_for_row(tmp_path):
    rng = np.random.default_rng(3)
    grid = Grid(4000.0, 5000.0, 1030)
    store = SpectrumStore(tmp_path / "s.zarr", grid)
    flux, mask = _rows(rng, 10, grid.pixels)
    store.append([f"d{i}" for i in range(10)], flux, mask)

    coarse = store.coarsened(4)
    assert coarse.grid == Grid(4000.0, float(grid.edges[1028]), 257)
    assert list(coarse.dids) == list(store.dids)
    expected = downsample(flux, mask, 4)
    np.testing.assert_allclose(coarse.read(0, 10)[0], expected[0])
    np.testing.assert_array_equal(coarse.read(0, 10)[1], expected[1])

    more, more_mask = _rows(rng, 3, grid.pixels)
    store.append(["d10", "d11", "d12"], more, more_mask)
    store.truncate(8)  # as an ingest cuts an unfinished tail, then writes other rows
    store.append(["e8", "e9"], more[:2], more_mask[:2])
    coarse = store.coarsened(4)
    assert list(coarse.dids) == [f"d{i}" for i in range(8)] + ["e8", "e9"]
    np.testing.assert_allclose(coarse.read(8, 10)[0], downsample(more[:2], more_mask[:2], 4)[0])
    assert store.coarsened(1) is store
