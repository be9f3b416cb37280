"""The archive behind the Backend interface: opened by name, row ids and row hashes as SQL."""

from __future__ import annotations

import pytest

from vo_ml.archive.backend import INTERNAL_SCHEMA, Backend
from vo_ml.archive.backends import open_backend
from vo_ml.archive.tap_schema import Column, Table


def test_a_path_or_a_url_opens_the_archive_as_a_backend(tmp_path):
    db = tmp_path / "archive.duckdb"
    with open_backend(db) as writer:
        assert isinstance(writer, Backend)
        writer.record_failures([("a.fits", None, "not FITS")])
    with open_backend(f"duckdb://{db}", read_only=True) as reader:
        rows = reader.lookup(f"SELECT path, reason FROM {INTERNAL_SCHEMA}.ingest_report", [])
    assert rows == [("a.fits", "not FITS")]


def test_an_unknown_backend_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match="no archive backend called 'postgresql' .*duckdb"):
        open_backend("postgresql://localhost/archive")


def test_row_ids_order_rows_and_the_rows_hash_sees_every_change(tmp_path):
    table = Table("t", "t.rows", "rows", (Column("k", "char", arraysize="*"), Column("x", "int")))
    with open_backend(tmp_path / "archive.duckdb") as backend:
        backend.ensure_table(table, table.columns)

        def add(*rows: tuple[str, int]) -> int:
            """Add rows; the hash of every row's id and values afterwards."""
            backend.insert_rows(table, [{"k": k, "x": x} for k, x in rows], [])
            hashed = backend.rows_hash([backend.row_id, "k", "x"])
            return backend.lookup(f"SELECT {hashed} FROM t.rows", [])[0][0]

        first = add(("b", 1), ("a", 2))
        assert backend.lookup(f"SELECT k FROM t.rows ORDER BY {backend.row_id}", []) == [
            ("b",), ("a",)]
        assert add(("c", 3)) != first
