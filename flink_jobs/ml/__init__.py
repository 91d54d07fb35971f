"""Models in the stream: training (offline, needs the ``train`` extra), ONNX serving, drift.

- ``cdnow``: the CDNOW transaction log shipped in the ``lifetimes`` package, as core events.
- ``replay``: model inputs for a history, computed by replaying it through ``SegmentEngine``.
- ``datasets``: training rows (CDNOW at the end of calibration; synthetic feed per scored instant).
- ``train``: ``python -m flink_jobs.ml.train`` regenerates ``model_artifacts/``;
  ``iforest_onnx`` exports the Isolation Forest as one tree-ensemble node.
- ``cards``: model cards, loaded and checked against the ONNX model they describe.
- ``serving``: ``OnnxScorer``, the core's ``Scorer`` on onnxruntime, single or batched.
- ``drift``: population stability index of recent inputs against a card's reference.
"""
