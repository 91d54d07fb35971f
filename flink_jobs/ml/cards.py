"""Model cards: what a model in ``model_artifacts/`` reads, outputs and was trained on.

A card is ``<name>.card.json`` next to ``<name>.onnx``. ``load_card`` checks the card on its own
(known inputs, a score definition, a reference histogram per input); ``check_against_model``
checks it against the ONNX session's real input and output names, types and shapes. Every
problem of a card is reported at once, each naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..core.model_inputs import BY_NAME

CARD_SUFFIX = ".card.json"
# How a published score is derived from a model output (closed set, checked at load).
TRANSFORMS = ("column", "label", "isolation_forest")


class ModelCardError(ValueError):
    """A card that does not load or does not match its model; the message names the file."""


@dataclass(frozen=True)
class Reference:
    """Histogram of one input on the training data: bin i holds ``edges[i-1] <= v < edges[i]``
    (the first and last bins are open-ended), with ``proportions[i]`` of the rows."""

    edges: tuple[float, ...]
    proportions: tuple[float, ...]


@dataclass(frozen=True)
class ScoreSpec:
    name: str  # the published score, one of the catalogue's scores
    output: str  # ONNX output it is read from
    transform: str  # one of TRANSFORMS
    column: int = 0  # for "column": which column of a 2-d output
    offset: float = 0.0  # for "isolation_forest": the model's offset_ (score = -(output + offset))


@dataclass(frozen=True)
class Gate:
    """Score a customer only when ``input >= at_least`` (the population the model was trained on)."""

    input: str
    at_least: float


@dataclass(frozen=True)
class OutlierGuard:
    """Robust z-score of ``log1p(input)`` against the reference population: (x - median) / scale."""

    name: str
    input: str
    median: float
    scale: float


@dataclass(frozen=True)
class ModelCard:
    path: Path
    name: str
    version: str
    model_file: Path
    sha256: str
    input_tensor: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    score: ScoreSpec
    gate: Gate | None
    guard: OutlierGuard | None
    references: Mapping[str, Reference]
    raw: Mapping[str, Any]

    @property
    def score_names(self) -> tuple[str, ...]:
        return (self.score.name,) + ((self.guard.name,) if self.guard else ())


DEFAULT_ARTIFACTS = Path(__file__).resolve().parents[2] / "model_artifacts"
ARTIFACTS_ENV = "SEGMENTS_MODEL_ARTIFACTS"


def artifacts_folder(artifacts: Path | str | None = None) -> Path:
    """The folder of cards and models: ``artifacts``, else ``$SEGMENTS_MODEL_ARTIFACTS``, else the
    repository's ``model_artifacts/``."""
    return Path(artifacts or os.environ.get(ARTIFACTS_ENV) or DEFAULT_ARTIFACTS)


def cards_for(artifacts: Path | str | None, known_scores: Sequence[str]) -> tuple[list[ModelCard], list[ModelCard]]:
    """The cards in ``artifacts`` that publish a score the catalogue declares (``known_scores``),
    each checked against it, and those that publish none of them (a team's own catalogue that
    names none of the shipped models' scores runs without them). ``ModelCardError`` for a folder
    without cards, a broken card, or a card whose scores the catalogue declares only in part."""
    folder = artifacts_folder(artifacts)
    paths = card_paths(folder) if folder.is_dir() else []
    if not paths:
        raise ModelCardError(
            f"{folder}: no model cards (*{CARD_SUFFIX}) found; set {ARTIFACTS_ENV} or pass the folder, "
            "or run `python -m flink_jobs.ml.train` to create them"
        )
    kept: list[ModelCard] = []
    left_out: list[ModelCard] = []
    for path in paths:
        card = load_card(path)
        if any(name in known_scores for name in card.score_names):
            kept.append(load_card(path, known_scores))  # every score it publishes must be declared
        else:
            left_out.append(card)
    return kept, left_out


def card_paths(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*{CARD_SUFFIX}"))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_card(path: Path, known_scores: Sequence[str] | None = None) -> ModelCard:
    """Parse and check a card on its own; raise ModelCardError listing every problem.
    ``known_scores``: the scores rules may test (the event catalogue's), which the card must
    publish under; not checked when None."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelCardError(f"{path}: cannot read the model card: {e}") from None
    return parse_card(raw, path, known_scores)


def parse_card(raw: Any, path: Path, known_scores: Sequence[str] | None = None) -> ModelCard:
    """``load_card`` of a card already read: ``path`` says where it came from (a file, or the
    rules topic's record of a published model) and what its model file is relative to."""
    if not isinstance(raw, dict):
        raise ModelCardError(_message(path, ["a model card is a JSON object"]))
    problems: list[str] = []

    def need(key: str, kind: type, where: Mapping[str, Any] = raw, label: str = "") -> Any:
        value = where.get(key) if isinstance(where, Mapping) else None
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            problems.append(f"'{label}{key}' is missing or not a {kind.__name__}")
            return kind()
        return value

    name = need("name", str)
    version = need("version", str)
    model = need("model", dict)
    model_file = need("file", str, model, "model.")
    sha = need("sha256", str, model, "model.")
    tensor = need("input", dict, model, "model.")
    tensor_name = need("name", str, tensor, "model.input.")
    inputs = [need("name", str, i, "inputs[].") for i in need("inputs", list) if isinstance(i, dict)]
    outputs = [need("name", str, o, "outputs[].") for o in need("outputs", list) if isinstance(o, dict)]
    if not inputs:
        problems.append("'inputs' lists no input features")
    for item in raw.get("inputs", []) if isinstance(raw.get("inputs"), list) else []:
        known = BY_NAME.get(str(item.get("name"))) if isinstance(item, dict) else None
        if known is None:
            problems.append(f"input {item.get('name') if isinstance(item, dict) else item!r} is not a model input the engine computes ({', '.join(BY_NAME)})")
        elif item.get("unit") != known.unit:
            problems.append(f"input '{known.name}' has unit {item.get('unit')!r}, the engine computes it in {known.unit!r}")

    score_raw = need("score", dict)
    score = ScoreSpec(
        name=need("name", str, score_raw, "score."),
        output=need("output", str, score_raw, "score."),
        transform=need("transform", str, score_raw, "score."),
        column=int(score_raw.get("column", 0)),
        offset=float(score_raw.get("offset", 0.0)),
    )
    if known_scores is not None and score.name and score.name not in known_scores:
        problems.append(f"score '{score.name}' is not one of the scores rules know ({', '.join(known_scores)})")
    if score.transform and score.transform not in TRANSFORMS:
        problems.append(f"score.transform '{score.transform}' is not one of {', '.join(TRANSFORMS)}")
    if score.output and outputs and score.output not in outputs:
        problems.append(f"score.output '{score.output}' is not among the card's outputs ({', '.join(outputs)})")

    gate = None
    if isinstance(raw.get("applies_when"), dict):
        g = raw["applies_when"]
        gate = Gate(need("input", str, g, "applies_when."), float(g.get("at_least", 0)))
        if gate.input not in inputs:
            problems.append(f"applies_when.input '{gate.input}' is not one of the card's inputs")

    guard = None
    if isinstance(raw.get("outlier_guard"), dict):
        g = raw["outlier_guard"]
        guard = OutlierGuard(
            need("name", str, g, "outlier_guard."), need("input", str, g, "outlier_guard."),
            float(g.get("median", 0.0)), float(g.get("scale", 0.0)),
        )
        if known_scores is not None and guard.name not in known_scores:
            problems.append(f"outlier_guard.name '{guard.name}' is not one of the scores rules know")
        if guard.input not in BY_NAME:
            problems.append(f"outlier_guard.input '{guard.input}' is not a model input")
        if not guard.scale > 0:
            problems.append("outlier_guard.scale must be positive")

    references: dict[str, Reference] = {}
    ref_raw = raw.get("reference", {}).get("histograms", {}) if isinstance(raw.get("reference"), dict) else {}
    for feature in inputs:
        h = ref_raw.get(feature)
        if not isinstance(h, dict):
            problems.append(f"reference.histograms has no histogram for input '{feature}'")
            continue
        edges = tuple(float(x) for x in h.get("bin_edges", []))
        props = tuple(float(x) for x in h.get("proportions", []))
        if len(props) != len(edges) + 1:
            problems.append(f"reference histogram of '{feature}': {len(props)} proportions for {len(edges)} edges (want edges + 1)")
        elif list(edges) != sorted(set(edges)) or not math.isclose(sum(props), 1.0, abs_tol=1e-6):
            problems.append(f"reference histogram of '{feature}': edges must increase and proportions sum to 1")
        else:
            references[feature] = Reference(edges, props)

    if problems:
        raise ModelCardError(_message(path, problems))
    return ModelCard(
        path=path,
        name=name,
        version=version,
        model_file=path.parent / model_file,
        sha256=sha,
        input_tensor=tensor_name,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        score=score,
        gate=gate,
        guard=guard,
        references=references,
        raw=raw,
    )


def check_against_model(card: ModelCard, session_inputs: Sequence[Any], session_outputs: Sequence[Any]) -> None:
    """Compare the card with an onnxruntime session's ``get_inputs()`` / ``get_outputs()``
    (objects with ``name``, ``type``, ``shape``); raise ModelCardError listing every mismatch."""
    problems: list[str] = []
    if len(session_inputs) != 1:
        problems.append(f"the model has {len(session_inputs)} inputs, the card describes one tensor '{card.input_tensor}'")
    else:
        real = session_inputs[0]
        if real.name != card.input_tensor:
            problems.append(f"the model's input is named '{real.name}', the card says '{card.input_tensor}'")
        if real.type != "tensor(float)":
            problems.append(f"the model's input is {real.type}, the card's inputs are float32 features")
        width = real.shape[1] if len(real.shape) == 2 else None
        if width != len(card.inputs):
            problems.append(
                f"the model's input has shape {list(real.shape)}, the card lists {len(card.inputs)} features "
                f"({', '.join(card.inputs)})"
            )
    names = [o.name for o in session_outputs]
    if names != list(card.outputs):
        problems.append(f"the model's outputs are {names}, the card says {list(card.outputs)}")
    by_name = {o.name: o for o in session_outputs}
    out = by_name.get(card.score.output)
    if out is not None and card.score.transform == "column":
        width = out.shape[1] if len(out.shape) == 2 else None
        if not isinstance(width, int) or card.score.column >= width:
            problems.append(f"score.column {card.score.column} is outside output '{out.name}' of shape {list(out.shape)}")
    if problems:
        raise ModelCardError(_message(card.model_file, problems, card=card.path))


def _message(path: Path, problems: list[str], card: Path | None = None) -> str:
    head = f"{path}: does not match its model card {card}" if card else f"{path}: invalid model card"
    return "\n".join([head, *(f"  - {p}" for p in problems), "  help: regenerate with `python -m flink_jobs.ml.train`"
                      " or fix the card so it describes the model"])
