"""Models published to the running job: one record per model on the rules topic.

Key ``models/<name>``; value a JSON object with the model card (``card``) and the ONNX file's
bytes (``onnx``, base64), so a card and its model always arrive together; a record without a
value (a tombstone) withdraws the model. The job checks a published model as it checks the
shipped ones (the card on its own, its scores against the catalogue in use, the bytes against the
card's sha256, the model's tensors against the card) before it scores with it, and keeps the
last good one otherwise. ``segments models publish`` writes these records.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path
from typing import Sequence

from .cards import ModelCard, ModelCardError, load_card, parse_card

MODEL_PREFIX = "models/"


def model_key(name: str) -> str:
    return f"{MODEL_PREFIX}{name}"


def is_model_key(key: str) -> bool:
    return key.startswith(MODEL_PREFIX)


def model_record(card_path: Path) -> tuple[str, str, ModelCard]:
    """The rules topic's record (key, value) publishing the model of the card at ``card_path``,
    and the card. ``ModelCardError`` when the card is broken or its model file differs from it."""
    card = load_card(card_path)
    try:
        data = card.model_file.read_bytes()
    except OSError as exc:
        raise ModelCardError(f"{card_path}: cannot read its model file {card.model_file}: {exc}") from None
    _check_bytes(card, data, str(card.model_file))
    value = json.dumps({"card": card.raw, "onnx": base64.b64encode(data).decode("ascii")}, separators=(",", ":"))
    return model_key(card.name), value, card


def read_model_record(key: str, text: str, known_scores: Sequence[str] | None) -> tuple[ModelCard, bytes]:
    """The card and ONNX bytes of a published model; ``ModelCardError`` saying what is wrong."""
    where = Path(key)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelCardError(f"{key}: the record is not JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("card"), dict) or not isinstance(raw.get("onnx"), str):
        raise ModelCardError(f"{key}: a published model is {{\"card\": {{...}}, \"onnx\": \"<base64>\"}}")
    card = parse_card(raw["card"], where, known_scores)
    if model_key(card.name) != key:
        raise ModelCardError(f"{key}: the card names the model '{card.name}': publish it under {model_key(card.name)}")
    try:
        data = base64.b64decode(raw["onnx"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ModelCardError(f"{key}: 'onnx' is not base64: {exc}") from None
    _check_bytes(card, data, key)
    return card, data


def _check_bytes(card: ModelCard, data: bytes, where: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != card.sha256:
        raise ModelCardError(
            f"{where}: sha256 {actual[:12]}… does not match its card ({card.sha256[:12]}…): the model was "
            "replaced without its card; regenerate both with `python -m flink_jobs.ml.train`"
        )
