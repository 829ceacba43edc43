"""Exporters: one per artifact format, behind one small protocol and a registry.

Exporters take parts that are already built; they never decide where to split.
"""

from exporters.registry import Exporter, get_exporter, register, registered_names

# Each format registers itself on import; none imports its backend until used.
from exporters import aoti, onnx, onnx_fp16, onnx_int8, pt2, tflite, tflite_fp16, tflite_int8, torchscript  # noqa: E402,F401

__all__ = ["Exporter", "get_exporter", "register", "registered_names"]
