"""In-process PyTorch inference (the default backend): the zoo model itself, batched as a list of images."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import Backend, Detections, ModelInfo, Result


def to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """RGB uint8 [H, W, 3] -> float [3, H, W] on [0, 1]."""
    return torch.from_numpy(image).to(device).permute(2, 0, 1).float().div_(255.0)


class TorchBackend(Backend):
    """Runs an ``nn.Module`` that follows the zoo contract (docs/design.md): detectors take a list of [3, H, W]
    tensors on [0, 1] and return boxes in input pixels; segmenters take [B, 3, S, S] and return ``{"out": logits}``: each image is resized
    to S x S and its label map (argmax at S x S) resized back with nearest-neighbour."""

    def __init__(self, model: nn.Module, info: ModelInfo, *, device: str | torch.device = "cpu",
                 max_batch_size: int = 8, segmentation_size: int = 512) -> None:
        self.device = torch.device(device)
        self.model = model.eval().to(self.device, dtype=torch.float32)  # inputs are float32 (weights may ship f16)
        self.info = info
        self.max_batch_size = max_batch_size
        self.segmentation_size = segmentation_size

    @torch.inference_mode()
    def infer(self, images: list[np.ndarray]) -> list[Result]:
        if self.info.task == "segmentation":
            return self._segment(images)
        outputs = self.model([to_tensor(image, self.device) for image in images])
        return [
            Detections(boxes=o["boxes"].float().cpu().numpy(), scores=o["scores"].float().cpu().numpy(),
                       labels=o["labels"].cpu().numpy().astype(np.int64))
            for o in outputs
        ]

    def _segment(self, images: list[np.ndarray]) -> list[np.ndarray]:
        size = self.segmentation_size
        batch = torch.stack([
            F.interpolate(to_tensor(image, self.device)[None], size=(size, size), mode="bilinear",
                          align_corners=False, antialias=True)[0]
            for image in images
        ])
        labels = self.model(batch)["out"].argmax(1, keepdim=True).float()  # labels at the model's resolution
        return [
            F.interpolate(label[None], size=image.shape[:2], mode="nearest")[0, 0].to(torch.int64).cpu().numpy()
            for label, image in zip(labels, images)
        ]
