"""Catalogue values for spectra from a CSV table beside the files.

Archives and the synthetic generator keep per-file labels in a table (``labels.csv``: a ``file``
column plus parameters). A :class:`CsvDescriber` turns a row into the values of a catalogue row:
``obs_id`` from the file name, ``target_name`` from ``object``, the stellar labels, and the
radial velocity that a rest-frame shift needs.
"""

from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["CsvDescriber", "RADIAL_VELOCITY"]

#: Key of a describer's result that is not a column: the star's radial velocity in km/s.
RADIAL_VELOCITY = "radial_velocity"

_LABELS = ("teff", "logg", "feh")


class CsvDescriber:
    """Values for each file named in the ``file`` column of a CSV table."""

    def __init__(self, table: Path) -> None:
        with open(table, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if rows and "file" not in rows[0]:
            raise ValueError(f"{table}: a labels table needs a 'file' column naming each spectrum")
        self.rows = {Path(r["file"]).name: r for r in rows}

    def __call__(self, path: Path, spectrum: object) -> dict:
        row = self.rows.get(Path(path).name)
        if row is None:
            return {}
        values: dict = {"obs_id": Path(path).stem}
        if row.get("object"):
            values["target_name"] = row["object"]
        values.update({k: float(row[k]) for k in _LABELS if row.get(k)})
        if row.get("rv"):
            values[RADIAL_VELOCITY] = float(row["rv"])
        return values
