"""Semantic segmentation metrics from a confusion matrix, accumulated batch by batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from training.distributed import all_reduce_sum


class ConfusionMatrix:
    """``matrix[t, p]`` counts pixels of true class t predicted as p; pixels labelled ``ignore_index`` are skipped.

    Call :meth:`update` per batch with class-index maps (or logits ``[B, K, H, W]`` for predictions), then
    :meth:`synchronize` under torch.distributed (``device`` must suit the backend: CUDA for NCCL), then read the
    metrics.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: Sequence[str] | None = None,
                 device: torch.device | str = "cpu") -> None:
        if num_classes < 1:
            raise ValueError("num_classes must be positive")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = tuple(class_names) if class_names is not None else tuple(map(str, range(num_classes)))
        self.matrix = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.matrix.zero_()

    def update(self, prediction: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add a batch: ``prediction`` class indices with ``target``'s shape, or logits with a class axis at dim 1."""
        prediction, target = torch.as_tensor(prediction), torch.as_tensor(target)
        if prediction.is_floating_point():
            if prediction.dim() != target.dim() + 1 or prediction.shape[1] != self.num_classes:
                raise ValueError(f"logits must be [B, {self.num_classes}, ...] for targets of shape "
                                 f"{tuple(target.shape)}, got {tuple(prediction.shape)}")
            prediction = prediction.argmax(dim=1)
        if prediction.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
        target = target.to(prediction.device).long().flatten()
        prediction = prediction.long().flatten()
        keep = target != self.ignore_index
        target, prediction = target[keep], prediction[keep]
        for name, values in (("target", target), ("prediction", prediction)):
            if values.numel() and (values.min() < 0 or values.max() >= self.num_classes):
                raise ValueError(f"{name} has labels outside [0, {self.num_classes}) other than ignore_index "
                                 f"{self.ignore_index}")
        counts = torch.bincount(target * self.num_classes + prediction, minlength=self.num_classes**2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes).to(self.matrix.device)

    def synchronize(self) -> None:
        """Sum the matrix over torch.distributed ranks (no-op when not initialised)."""
        all_reduce_sum(self.matrix)

    def iou(self) -> np.ndarray:
        """Per-class IoU = TP / (TP + FP + FN); NaN for a class absent from both targets and predictions."""
        m = self.matrix.double().cpu().numpy()
        tp = np.diag(m)
        union = m.sum(0) + m.sum(1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over classes with a defined IoU (as MMSegmentation and torchmetrics' macro JaccardIndex)."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        """Correct pixels / counted pixels (ignore_index excluded)."""
        m = self.matrix.double()
        total = float(m.sum())
        return float(m.diagonal().sum()) / total if total else float("nan")

    def mean_class_accuracy(self) -> float:
        """Mean over the classes present in the targets of the per-class recall TP / (TP + FN): MMSegmentation's
        ``mAcc``. Not torchmetrics' ``MulticlassAccuracy(average="macro")``, which averages over the classes present
        in the targets *or* the predictions, a class only predicted counting 0: lower when predictions hold classes
        the targets lack, equal otherwise."""
        m = self.matrix.double().cpu().numpy()
        gt = m.sum(1)
        return float(np.mean(np.diag(m)[gt > 0] / gt[gt > 0])) if (gt > 0).any() else float("nan")

    def summary(self) -> dict[str, float]:
        """mIoU, pixel accuracy, mean class accuracy and per-class IoU keyed ``IoU/<name>``."""
        out = {"mIoU": self.miou(), "pixel_accuracy": self.pixel_accuracy(),
               "mean_class_accuracy": self.mean_class_accuracy()}
        out.update({f"IoU/{n}": float(v) for n, v in zip(self.class_names, self.iou())})
        return out
