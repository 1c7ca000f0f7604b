"""Export zoo models to ONNX and TorchScript (fixed size, dynamic batch, padded outputs), check parity with the
eager model on real photos, and generate Triton model repositories.

>>> from export import export_onnx
>>> export_onnx("retinanet_lite0_neon_trees", "exports/neon_onnx")     # model.onnx + metadata.json
"""
from .api import ParityError, default_image_size, export_model, export_onnx, export_torchscript, parity_of_export_dir
from .artifact import ExportError, read_metadata
from .graphs import ExportUnsupportedError, graph_for
from .parity import ParityReport, Tolerance, check_parity

__all__ = [
    "export_onnx", "export_torchscript", "export_model", "parity_of_export_dir", "default_image_size",
    "graph_for", "check_parity", "read_metadata", "ParityReport", "Tolerance", "ExportError", "ParityError",
    "ExportUnsupportedError",
]
