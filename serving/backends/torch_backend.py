"""In-process PyTorch inference (the default backend): the zoo model itself, batched as a list of images."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo.inference import detect
from zoo.vocabulary import SEGMENTATION

from .base import Backend, Detections, ModelInfo, Result


def to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """RGB uint8 [H, W, 3] -> float [3, H, W] on [0, 1]."""
    return torch.from_numpy(image).to(device).permute(2, 0, 1).float().div_(255.0)


class TorchBackend(Backend):
    """Runs an ``nn.Module`` that follows the zoo contract (docs/design.md): detectors take a list of [3, H, W]
    tensors on [0, 1] and return boxes in input pixels (each photo is letterboxed into ``input_size`` first, the
    spec's :meth:`~zoo.preprocess.Preprocessing.input_size` by default, exactly as the exported backends do);
    segmenters take [B, 3, S, S] and return ``{"out": logits}``: each image is resized to S x S and its label map
    (argmax at S x S) resized back with nearest-neighbour.

    On CPU a batch of several images runs as ``streams`` single-threaded forwards side by side, one image each (the
    throughput mode of OpenVINO's CPU plugin): a stacked batch runs slower per image in oneDNN (measured by
    benchmarks/bench_batch_scaling.py; its figures are in the README).
    A single image keeps every intra-op thread, for latency. On CUDA the batch runs as one forward.
    """

    def __init__(self, model: nn.Module, info: ModelInfo, *, device: str | torch.device = "cpu",
                 max_batch_size: int = 8, segmentation_size: int = 512, streams: int | None = None,
                 input_size: tuple[int, int] | None = None, pad_value: float | None = None) -> None:
        # Detectors see each photo letterboxed into the same fixed input as the exported backends do
        # (zoo.inference.detect); the defaults come from the model's spec.
        self.input_size = input_size
        self.pad_value = pad_value
        self.device = torch.device(device)
        self.model = model.eval().to(self.device, dtype=torch.float32)  # inputs are float32 (weights may ship f16)
        self.info = info
        self.max_batch_size = max_batch_size
        self.segmentation_size = segmentation_size
        self.threads = torch.get_num_threads()
        if self.device.type != "cpu":
            streams = 1
        self.streams = max(1, streams if streams is not None else os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(self.streams, thread_name_prefix="torch-stream",
                                        initializer=torch.set_num_threads, initargs=(1,)) \
            if self.streams > 1 else None

    def warmup(self) -> None:
        """One image on the calling thread, then (with streams) one on each stream."""
        probe = np.full((64, 64, 3), 127, dtype=np.uint8)
        self.infer([probe])
        if self._pool is not None:
            self.infer([probe] * self.streams)

    def infer(self, images: list[np.ndarray]) -> list[Result]:
        if self._pool is None or len(images) == 1:
            if torch.get_num_threads() != self.threads:  # the streams' setting leaks into threads made later
                torch.set_num_threads(self.threads)
            return self._forward(images)
        return [result for results in self._pool.map(self._forward, [[image] for image in images])
                for result in results]

    @torch.inference_mode()
    def _forward(self, images: list[np.ndarray]) -> list[Result]:
        if self.info.task == SEGMENTATION:
            return self._segment(images)
        found = detect(self.model, images, input_size=self.input_size, pad_value=self.pad_value, device=self.device)
        return [Detections(boxes=d["boxes"], scores=d["scores"], labels=d["labels"]) for d in found]

    def _segment(self, images: list[np.ndarray]) -> list[Result]:
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

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
