"""Real-time customer segmentation on Apache Flink (PyFlink)."""

__version__ = "0.1.0"
