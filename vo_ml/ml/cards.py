"""Model ids and model cards: how a trained model is named, and the record saved beside it.

The model id is derived from the config and the checksum of the training data, so training the
same config on the same data twice gives the same id. The card (``model_card.json``) holds what a
user of the model needs: its config, latent dimension, grid, data checksum, metrics and map
projection. Everything that reads a model reads its card here, without loading TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

__all__ = ["CARD_NAME", "is_trained", "load_card", "model_id_for", "write_card"]

CARD_NAME = "model_card.json"


def model_id_for(config: dict, data_checksum: str) -> str:
    """``<config name>-<10 hex digits>``: the same config on the same data gives the same id."""
    digest = hashlib.sha256(
        (json.dumps(config, sort_keys=True) + data_checksum).encode("utf-8")).hexdigest()
    return f"{config['name']}-{digest[:10]}"


def is_trained(model_dir: Path) -> bool:
    """Whether ``model_dir`` holds a finished model (the card is written last)."""
    return (Path(model_dir) / CARD_NAME).is_file()


def load_card(model_dir: Path) -> dict:
    card_path = Path(model_dir) / CARD_NAME
    if not card_path.is_file():
        raise FileNotFoundError(
            f"{model_dir} is not a trained model (no {CARD_NAME}): train one with 'vo-ml train'"
        )
    return json.loads(card_path.read_text(encoding="utf-8"))


def write_card(model_dir: Path, card: dict) -> None:
    (Path(model_dir) / CARD_NAME).write_text(json.dumps(card, indent=2), encoding="utf-8")
