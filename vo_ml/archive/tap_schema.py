"""TAP_SCHEMA from the declarative files in ``tap_schema/*.yaml``.

Column metadata is written once, in YAML, and used three ways: to create the archive tables, to fill
the ``TAP_SCHEMA`` tables clients query (TAP 1.1 section 4), and to label every VOTable FIELD the
service writes. Keeping one source means the three can never disagree.

A YAML file declares a reusable group of columns (``group: name``), a schema with tables, whose
columns come from ``columns`` and/or ``column_groups``, or a table template (``template: name``):
the description and columns of tables no schema file names, such as an operator's own
``myarchive.spectra`` (see :meth:`TapSchema.describing`). Text fields may hold ``{placeholders}``
(the ML columns use ``{model}`` and ``{latent_dim}``) filled from the values given to :func:`load`.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib.resources.abc import Traversable
from pathlib import Path

from vo_ml.resources import load_yaml, packaged

#: SQL type of each VOTable datatype a TAP_SCHEMA column may declare.
SQL_TYPES = {
    "boolean": "BOOLEAN",
    "short": "SMALLINT",
    "int": "INTEGER",
    "long": "BIGINT",
    "float": "FLOAT",
    "double": "DOUBLE",
    "char": "VARCHAR",
    "unicodeChar": "VARCHAR",
}


def undelimited(name: str) -> str:
    """A published name without the double quotes that delimit it, if it has them."""
    return name[1:-1] if len(name) > 1 and name[0] == name[-1] == '"' else name


@dataclass(frozen=True)
class Column:
    """One published column, with the metadata TAP_SCHEMA.columns and VOTable FIELDs carry."""

    name: str
    datatype: str
    description: str = ""
    arraysize: str | None = None
    xtype: str | None = None
    unit: str | None = None
    ucd: str | None = None
    utype: str | None = None
    principal: bool = False
    indexed: bool = False
    std: bool = False

    @property
    def sql_name(self) -> str:
        """The name in the database: a delimited published name (``"size"``, an ADQL reserved
        word) without its quotes."""
        return undelimited(self.name)

    @property
    def is_array(self) -> bool:
        """True for numeric arrays such as ``embedding`` (strings also carry an arraysize)."""
        return self.arraysize is not None and self.datatype not in ("char", "unicodeChar")

    @property
    def dimension(self) -> int | None:
        """The length of a fixed-size array column (``arraysize`` n or n*), else None."""
        size = (self.arraysize or "").rstrip("*")
        return int(size) if self.is_array and size.isdigit() else None

    @property
    def sql_type(self) -> str:
        """The column's type in the backend; fixed-size numeric arrays become ``FLOAT[n]``."""
        base = SQL_TYPES[self.datatype]
        if not self.is_array:
            return base
        return f"{base}[{self.dimension}]" if self.dimension else f"{base}[]"


@dataclass(frozen=True)
class Table:
    """One published table; ``name`` is the qualified name used in ADQL (``miles.spectra``)."""

    schema: str
    name: str
    description: str
    columns: tuple[Column, ...]
    type: str = "table"
    #: For a view over other tables: SQL constants for columns those tables do not have.
    constants: tuple[tuple[str, str], ...] = ()
    #: Its number of rows when counted (a registry record tells it), else None.
    nrows: int | None = None

    def with_values(self, **values: object) -> Table:
        """A copy with ``{placeholders}`` in descriptions and arraysizes filled from ``values``."""
        return replace(self, columns=tuple(
            replace(c, description=_fill(c.description, values), arraysize=_fill(c.arraysize, values))
            for c in self.columns
        ))

    def column(self, name: str) -> Column | None:
        """The column called ``name``, compared case-insensitively as ADQL regular identifiers are."""
        lowered = name.lower()
        return next((c for c in self.columns if c.sql_name.lower() == lowered), None)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def sql_name(self) -> str:
        """The qualified name in the database's SQL, each part quoted: ``"miles"."spectra"``."""
        schema, name = self.name.split(".")
        return f'"{schema}"."{name}"'

    @property
    def holds_spectra(self) -> bool:
        """True for a table of spectra, one row each named by its publisher DID: what ingest
        fills and SSA searches (a view such as ivoa.obscore is not one)."""
        return self.type == "table" and self.column("obs_publisher_did") is not None


@dataclass(frozen=True)
class Schema:
    name: str
    description: str
    tables: tuple[Table, ...]


@dataclass(frozen=True)
class TableTemplate:
    """What a table gets that no schema file describes: its description, its schema's (when
    the schema is new too) and its columns."""

    description: str
    schema_description: str
    columns: tuple[Column, ...]

    def table(self, name: str) -> Table:
        return Table(name.split(".")[0], name, self.description, self.columns)


#: The template of every spectrum table no schema file names (tap_schema/spectra.yaml).
SPECTRUM_TEMPLATE = "spectra"


@dataclass
class TapSchema:
    """Every schema, table and column the service publishes, and nothing else."""

    schemas: list[Schema] = field(default_factory=list)
    #: Table templates by name, for tables no schema file names.
    templates: dict[str, TableTemplate] = field(default_factory=dict)

    @property
    def tables(self) -> dict[str, Table]:
        """Published tables by lower-cased qualified name."""
        return {t.name.lower(): t for s in self.schemas for t in s.tables}

    def table(self, name: str) -> Table | None:
        return self.tables.get(name.lower())

    def with_values(self, **values: object) -> TapSchema:
        """A copy with ``{placeholders}`` in text fields filled, e.g. after a new model is embedded."""
        return TapSchema([
            replace(s, tables=tuple(t.with_values(**values) for t in s.tables)) for s in self.schemas
        ], self.templates)

    def describing(self, names: Iterable[str], template: str = SPECTRUM_TEMPLATE) -> TapSchema:
        """A copy that also describes each qualified table name in ``names`` that no schema
        file does, with the columns of ``template``: an operator's own table needs no YAML.
        A table goes into its schema if a file declares that schema, else into a new one."""
        missing = list(dict.fromkeys(n for n in names if self.table(n) is None))
        if not missing:
            return self
        model = self.templates.get(template)
        if model is None:
            raise ValueError(f"no tap_schema file declares the table template {template!r}, "
                             f"which describes {', '.join(missing)}")
        schemas = {s.name.lower(): s for s in self.schemas}
        for name in missing:
            key = name.split(".")[0].lower()
            schema = schemas.get(key) or Schema(name.split(".")[0], model.schema_description, ())
            schemas[key] = replace(schema, tables=(*schema.tables, model.table(name)))
        return TapSchema(list(schemas.values()), self.templates)


def load(
    directory: str | Path | Traversable | None = None, **values: object
) -> TapSchema:
    """Read every YAML file of ``directory`` (by default the packaged ``tap_schema/``).

    Placeholders not given in ``values`` stay as written until :meth:`TapSchema.with_values`.
    """
    folder = packaged("tap_schema") if directory is None else directory
    if isinstance(folder, str):
        folder = Path(folder)
    documents = [
        load_yaml(f) for f in sorted(folder.iterdir(), key=lambda f: f.name)
        if f.name.endswith((".yaml", ".yml"))
    ]
    groups = {d["group"]: [_column(c, d["group"]) for c in d["columns"]] for d in documents if "group" in d}
    schemas = [_schema(d, groups) for d in documents if "schema" in d]
    templates = {d["template"]: TableTemplate(
        d.get("description", ""), d.get("schema_description", ""),
        _columns(d, f"template {d['template']}", groups)) for d in documents if "template" in d}
    schema = TapSchema(schemas, templates)
    return schema.with_values(**values) if values else schema


def _schema(document: Mapping, groups: Mapping[str, list[Column]]) -> Schema:
    name = document["schema"]
    tables = [Table(name, f"{name}.{t['name']}", t.get("description", ""),
                    _columns(t, f"table {name}.{t['name']}", groups), t.get("type", "table"),
                    tuple(t.get("constants", {}).items()))
              for t in document.get("tables", [])]
    return Schema(name, document.get("description", ""), tuple(tables))


def _columns(spec: Mapping, where: str, groups: Mapping[str, list[Column]]) -> tuple[Column, ...]:
    """A table's (or template's) own ``columns``, then those of its ``column_groups``."""
    columns = [_column(c, where) for c in spec.get("columns", [])]
    for group in spec.get("column_groups", []):
        if group not in groups:
            raise ValueError(
                f"{where} names column group {group!r}, but no tap_schema file declares it "
                f"(known: {', '.join(sorted(groups))})"
            )
        columns.extend(groups[group])
    return tuple(columns)


def _column(spec: Mapping, where: str) -> Column:
    if spec.get("datatype") not in SQL_TYPES:
        raise ValueError(
            f"column {spec.get('name')!r} of {where}: datatype {spec.get('datatype')!r} is not a "
            f"VOTable datatype ({', '.join(SQL_TYPES)})"
        )
    return Column(**{k: (str(v) if k == "arraysize" else v) for k, v in spec.items()})


class _KeepMissing(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _fill(text: str | None, values: Mapping[str, object]) -> str | None:
    if text is None or "{" not in text:
        return text
    return string.Formatter().vformat(text, (), _KeepMissing(values))


def tap_schema_rows(schema: TapSchema) -> dict[str, list[tuple]]:
    """The rows of the five TAP_SCHEMA tables, ready to insert."""
    rows: dict[str, list[tuple]] = {"schemas": [], "tables": [], "columns": [], "keys": [], "key_columns": []}
    for s_index, s in enumerate(schema.schemas):
        rows["schemas"].append((s.name, None, s.description, s_index))
        for t_index, t in enumerate(s.tables):
            rows["tables"].append((s.name, t.name, t.type, None, t.description, t_index))
            rows["columns"].extend(_column_row(t, c, i) for i, c in enumerate(t.columns))
    for key_id, (from_table, from_column), (target_table, target_column) in TAP_SCHEMA_KEYS:
        rows["keys"].append((key_id, from_table, target_table, f"{from_table}.{from_column} names a row of "
                             f"{target_table}", None))
        rows["key_columns"].append((key_id, from_column, target_column))
    return rows


#: The foreign keys between the TAP_SCHEMA tables themselves, which TAP 1.1 (section 4) lists in
#: TAP_SCHEMA.keys so that clients can follow them: (id, (from table, column), (target, column)).
TAP_SCHEMA_KEYS = (
    ("tap_schema_tables_schema", ("TAP_SCHEMA.tables", "schema_name"), ("TAP_SCHEMA.schemas", "schema_name")),
    ("tap_schema_columns_table", ("TAP_SCHEMA.columns", "table_name"), ("TAP_SCHEMA.tables", "table_name")),
    ("tap_schema_keys_from", ("TAP_SCHEMA.keys", "from_table"), ("TAP_SCHEMA.tables", "table_name")),
    ("tap_schema_keys_target", ("TAP_SCHEMA.keys", "target_table"), ("TAP_SCHEMA.tables", "table_name")),
    ("tap_schema_key_columns_key", ("TAP_SCHEMA.key_columns", "key_id"), ("TAP_SCHEMA.keys", "key_id")),
)


def _column_row(table: Table, c: Column, index: int) -> tuple:
    """One TAP_SCHEMA.columns row; ``size``, deprecated since TAP 1.1, repeats a fixed 1-D length."""
    size = int(c.arraysize) if c.arraysize and c.arraysize.isdigit() else None
    return (table.name, c.name, c.datatype, c.arraysize, c.xtype, size, c.description, c.utype,
            c.unit, c.ucd, int(c.indexed), int(c.principal), int(c.std), index)


def placeholders(columns: Iterable[Column]) -> set[str]:
    """Names of the ``{placeholders}`` still unfilled in these columns."""
    found: set[str] = set()
    for c in columns:
        for text in (c.description, c.arraysize):
            if text:
                found.update(f for _, f, _, _ in string.Formatter().parse(text) if f)
    return found
