"""Inference backends behind one interface (:class:`Backend`): ``torch`` (in-process, default), ``onnxruntime``
(in-process, from an ONNX export), ``openvino`` (the same export compiled by OpenVINO, f32 or bf16) and ``triton``
(a Triton Inference Server reached with tritonclient).

Each module imports its heavy dependency only when its backend is created."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Backend, Detections, ModelInfo, Result

if TYPE_CHECKING:
    from torch import nn

    from ..config import ServingConfig

__all__ = ["Backend", "Detections", "ModelInfo", "Result", "create_backend", "model_info"]


def model_info(model: nn.Module, backend: str) -> ModelInfo:
    """What the API reports for a model loaded by ``zoo.load`` (its spec and category names)."""
    import zoo

    return ModelInfo.from_spec(zoo.model_spec(model), zoo.model_categories(model), backend)


def load_zoo_model(name: str, config: ServingConfig) -> nn.Module:
    """``zoo.load`` with the server's device, weights and resize settings."""
    import zoo
    from zoo.models.yolox import YOLOX

    model = zoo.load(name, pretrained=config.pretrained, device=config.device)
    if config.image_size is not None:
        transform = getattr(model, "transform", None)  # torchvision's GeneralizedRCNNTransform
        if isinstance(model, YOLOX):
            model.set_input_size(config.image_size, config.image_size)
        elif transform is not None:
            transform.min_size = (config.image_size,)
            transform.max_size = config.image_size
    return model


def create_backend(name: str, config: ServingConfig) -> Backend:
    """The backend ``config.backend`` serving zoo model ``name``."""
    if config.backend == "torch":
        import zoo

        from .torch_backend import TorchBackend

        model = load_zoo_model(name, config)
        pre = zoo.model_spec(model).preprocessing
        size = pre.input_size(config.image_size)
        return TorchBackend(model, model_info(model, "torch"), device=config.device,
                            max_batch_size=config.max_batch_size, segmentation_size=size[0], streams=config.streams,
                            input_size=size)
    if config.backend in ("onnxruntime", "openvino"):
        from .onnx_backend import OnnxBackend

        return OnnxBackend.from_config(name, config)
    from .triton_backend import TritonBackend

    return TritonBackend.from_config(name, config)
