"""A compact ONNX graph for a scikit-learn IsolationForest (training side; needs the train extra).

skl2onnx converts an Isolation Forest into ~27 ONNX nodes per tree (1,360 for 50 trees), and a
single-row call then costs about a millisecond here, mostly per-node overhead. The forest's score
only needs, per tree, a number attached to the leaf a row lands in:

    depth(x) = sum over trees of  path_length(leaf) + c(samples in leaf) - 1
    score_samples(x) = -2 ** (-depth(x) / (n_trees * c(max_samples)))

(scikit-learn's ``_compute_score_samples``), so one ``TreeEnsembleRegressor`` with those leaf
values and SUM aggregation, plus three arithmetic nodes, computes the same thing. Output
``scores`` is ``decision_function`` (= score_samples - offset_), as skl2onnx's is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length


def isolation_forest_to_onnx(model: IsolationForest, width: int, input_name: str, opsets: dict[str, int]) -> onnx.ModelProto:
    if model.n_features_in_ != width:
        raise ValueError(f"the forest was fitted on {model.n_features_in_} features, not {width}")
    # scikit-learn only indexes each tree's own feature subset when it subsampled features.
    subsample = model._max_features != model.n_features_in_
    attrs: dict[str, Any] = {k: [] for k in (
        "nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values", "nodes_modes",
        "nodes_truenodeids", "nodes_falsenodeids", "target_treeids", "target_nodeids", "target_ids", "target_weights",
    )}
    for t, (estimator, features) in enumerate(zip(model.estimators_, model.estimators_features_)):
        tree = estimator.tree_
        leaf_value = model._decision_path_lengths[t] + model._average_path_length_per_tree[t] - 1.0
        for node in range(tree.node_count):
            left, right = int(tree.children_left[node]), int(tree.children_right[node])
            attrs["nodes_treeids"].append(t)
            attrs["nodes_nodeids"].append(node)
            if left == -1:
                attrs["nodes_modes"].append("LEAF")
                attrs["nodes_featureids"].append(0)
                attrs["nodes_values"].append(0.0)
                attrs["nodes_truenodeids"].append(0)
                attrs["nodes_falsenodeids"].append(0)
                attrs["target_treeids"].append(t)
                attrs["target_nodeids"].append(node)
                attrs["target_ids"].append(0)
                attrs["target_weights"].append(float(leaf_value[node]))
            else:
                feature = int(tree.feature[node])
                attrs["nodes_modes"].append("BRANCH_LEQ")
                attrs["nodes_featureids"].append(int(features[feature]) if subsample else feature)
                attrs["nodes_values"].append(_float32_at_most(float(tree.threshold[node])))
                attrs["nodes_truenodeids"].append(left)
                attrs["nodes_falsenodeids"].append(right)
    denominator = len(model.estimators_) * float(_average_path_length([model._max_samples])[0])
    nodes = [
        helper.make_node(
            "TreeEnsembleRegressor", [input_name], ["depths"], domain="ai.onnx.ml", n_targets=1,
            aggregate_function="SUM", post_transform="NONE", **attrs,
        ),
        helper.make_node("Mul", ["depths", "minus_inverse_denominator"], ["exponent"]),
        helper.make_node("Pow", ["two", "exponent"], ["anomaly"]),  # s(x) = 2 ** (-depth / denominator)
        helper.make_node("Sub", ["minus_offset", "anomaly"], ["scores"]),  # -s(x) - offset_
    ]
    constants = [
        helper.make_tensor("minus_inverse_denominator", TensorProto.FLOAT, [], [-1.0 / denominator]),
        helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
        helper.make_tensor("minus_offset", TensorProto.FLOAT, [], [-float(model.offset_)]),
    ]
    graph = helper.make_graph(
        nodes, "anomaly",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 1])],
        initializer=constants,
    )
    onx = helper.make_model(
        graph, producer_name="flink_jobs.ml.iforest_onnx",
        opset_imports=[helper.make_opsetid(domain, version) for domain, version in sorted(opsets.items())],
    )
    onx.ir_version = 8
    onnx.checker.check_model(onx)
    return onx


def _float32_at_most(threshold: float) -> float:
    """The largest float32 <= threshold. Inputs are float32, so ``x <= threshold`` and
    ``x <= _float32_at_most(threshold)`` agree for every input; rounding to nearest instead
    could round up past an input value and send it down the other branch."""
    t = np.float32(threshold)
    if float(t) > threshold:
        t = np.nextafter(t, np.float32(-np.inf))
    return float(t)
