"""Models to publish in tests: the shipped purchase-propensity card around an ONNX model that
gives everyone the same probability, so a published version visibly changes scores."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper

ARTIFACTS = Path(__file__).resolve().parents[3] / "model_artifacts"


def constant_propensity(folder: Path, p: float, version: str) -> Path:
    """Write ``purchase_propensity.onnx`` (P(repurchase) = ``p`` for every row, label argmax) and
    its card (the shipped card, this version and sha256) into ``folder``; the card's path."""
    n = helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 7])
    label = helper.make_tensor_value_info("label", TensorProto.INT64, [None])
    probabilities = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])
    nodes = [
        helper.make_node("Shape", ["features"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["rows"]),
        helper.make_node("Concat", ["rows", "two"], ["out_shape"], axis=0),
        helper.make_node("Expand", ["row", "out_shape"], ["probabilities"]),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    initializers = [
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("two", TensorProto.INT64, [1], [2]),
        helper.make_tensor("row", TensorProto.FLOAT, [1, 2], [1 - p, p]),
    ]
    graph = helper.make_graph(nodes, "constant_propensity", [n], [label, probabilities], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "purchase_propensity.onnx").write_bytes(data)
    card = json.loads((ARTIFACTS / "purchase_propensity.card.json").read_text())
    card["version"] = version
    card["model"] = dict(card["model"], sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), algorithm=f"constant P = {p}")
    path = folder / "purchase_propensity.card.json"
    path.write_text(json.dumps(card, indent=1))
    return path
