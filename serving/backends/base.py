"""The one interface every inference backend implements, and the values that cross it (:class:`ModelInfo` is
zoo.vocabulary's, re-exported here)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from zoo.vocabulary import ModelInfo  # one home: what a model is, from a spec or an export manifest


@dataclass(frozen=True)
class Detections:
    """One image's detections in its original pixels: boxes [N, 4] xyxy float32, scores [N], labels [N] (1..C)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))


Result = Detections | np.ndarray  # detection, or segmentation label map [H, W] (int) at the original size


class Backend(ABC):
    """Runs a batch of decoded images through one model.

    ``infer`` is called from a worker thread, one batch at a time; images are RGB uint8 ``[H, W, 3]`` arrays of any
    size and results come back in each image's own pixels. Raise :class:`serving.errors.BackendUnavailable` when the
    model cannot be reached (a remote server down); any other exception fails the batch's requests with a 500-free
    error answer.
    """

    info: ModelInfo
    max_batch_size: int = 8
    in_process: bool = True  # computes in this process (shares the server's compute thread) or waits on a server

    @abstractmethod
    def infer(self, images: list[np.ndarray]) -> list[Result]:
        """One result per image, in order."""

    def warmup(self) -> None:
        """Run one small batch so that the first request does not pay for lazy initialisation."""
        probe = np.full((64, 64, 3), 127, dtype=np.uint8)
        self.infer([probe])

    def is_ready(self) -> bool:
        """Whether the backend can serve now (a remote backend checks its server)."""
        return True

    def close(self) -> None:  # noqa: B027  (optional: a backend holding nothing keeps this no-op)
        """Release sessions, connections and threads."""
