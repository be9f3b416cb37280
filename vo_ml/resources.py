"""Locate the configuration and TAP_SCHEMA files that ship as package data.

They live at the top of the source tree (``configs/``, ``tap_schema/``) so operators find them, and
setup.cfg installs them as the data packages ``vo_ml.configs`` and ``vo_ml.tap_schema``.
"""

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import yaml


def packaged(kind: str) -> Traversable:
    """The installed folder for ``kind``: ``"configs"`` or ``"tap_schema"``."""
    return files(f"vo_ml.{kind}")


def load_yaml(source: str | Path | Traversable) -> dict:
    """Read one YAML mapping; ``source`` is a path or a packaged file."""
    readable = Path(source) if isinstance(source, str) else source
    data = yaml.safe_load(readable.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a YAML mapping at the top level")
    return data


def config_file(name_or_path: str | Path) -> Traversable | Path:
    """A config given by packaged name (``"dense2d"``) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    packaged_file = packaged("configs") / f"{path.stem}.yaml"
    if not packaged_file.is_file():
        available = sorted(p.name for p in packaged("configs").iterdir() if p.name.endswith(".yaml"))
        raise FileNotFoundError(
            f"no config {name_or_path!r}: give a YAML file path or one of {', '.join(available)}"
        )
    return packaged_file
