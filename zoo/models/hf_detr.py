"""DETR-family detectors from ``transformers`` (D-FINE, RT-DETR, RT-DETRv2, LW-DETR) behind the zoo's detector
contract, registered as architecture ``"hf_detr"``.

The network is ``transformers``' own class (``DFineForObjectDetection``, ...) chosen by the checkpoint's
``config.json`` (``model_type``); nothing of it is copied here. :func:`zoo_detector` subclasses that class so that
the state dict keeps the Hub's parameter names (a ``model.safetensors`` from the Hub loads as it is) and only the call
changes to ours:

- input: a list of RGB float tensors ``[3, H, W]`` on [0, 1] (the letterboxed canvas of ``zoo.detect``); each is
  resized to the processor's size (``preprocessor_config.json``: 640 x 640 for the published checkpoints) and
  normalised as the processor does;
- output in eval mode: ``list[dict(boxes [N, 4] xyxy in input pixels, scores [N], labels [N])]``, labels 1..C
  (``num_classes = C + 1`` as for every zoo detector; these heads have no background row, like YOLOX): the top
  ``max_detections`` of the sigmoid scores over queries x classes, as ``transformers``' post-processing of these
  models ranks them, kept above ``score_threshold`` (no NMS: the set prediction needs none);
- in training mode with targets (``boxes`` xyxy in pixels, ``labels`` 1..C): ``transformers``' loss terms as a dict.

``transformers`` is imported only when a model is built (the ``detr`` extra); ``import zoo`` never needs it.
"""
from __future__ import annotations

import functools
import json
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import register_builder

# config.json ``model_type`` -> the transformers class that runs it
FAMILIES: dict[str, str] = {
    "d_fine": "DFineForObjectDetection",
    "rt_detr": "RTDetrForObjectDetection",
    "rt_detr_v2": "RTDetrV2ForObjectDetection",
    "lw_detr": "LwDetrForObjectDetection",
}

# Parameters with one row per class, found by name in all four families: every decoder layer's classifier and the
# top-level one (``class_embed``), the encoder's query-selection scorer (``enc_score_head``; LW-DETR:
# ``enc_out_class_embed``, one per query group), and the denoising label embedding (``denoising_class_embed``,
# C + 1 rows, the last one the padding label of the denoising queries).
CLASS_ROW_NAMES: tuple[str, ...] = ("class_embed", "enc_score_head", "enc_out_class_embed")
DENOISING_EMBEDDING = "denoising_class_embed"


# The mixin is combined with a transformers nn.Module subclass at run time (zoo_detector); type checkers see that base.
if TYPE_CHECKING:
    _ModuleBase = nn.Module
else:
    _ModuleBase = object


class HfDetector(_ModuleBase):
    """Mixin over a ``transformers`` ``*ForObjectDetection`` class: the zoo call (photos in, detection dicts out).
    ``mean``/``std`` (None: no normalisation), ``resize_to`` (H, W) and the post-processing settings come from the
    checkpoint's processor config and the spec's :class:`~zoo.preprocess.Preprocessing`."""

    config: Any  # the transformers config (the base class sets it)
    score_thresh: float
    detections_per_img: int
    drop_first_class: bool = False
    resize_to: tuple[int, int] | None
    pixel_mean: tuple[float, ...] | None
    pixel_std: tuple[float, ...] | None

    def configure(self, *, score_thresh: float, detections: int, resize_to: tuple[int, int] | None,
                  mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        self.score_thresh = float(score_thresh)
        self.detections_per_img = int(detections)
        self.resize_to = None if resize_to is None else (int(resize_to[0]), int(resize_to[1]))
        self.pixel_mean = None if mean is None else tuple(float(v) for v in mean)
        self.pixel_std = None if std is None else tuple(float(v) for v in std)

    def load_state_dict(self, state_dict: Mapping[str, Tensor], strict: bool = True, assign: bool = False) -> Any:
        """As ``nn.Module.load_state_dict``; a state dict in the Hub's file layout (``save_pretrained`` names, tied
        copies left out) is first renamed by ``transformers``' own loader (:func:`hub_layout_to_model`). With
        ``drop_first_class``, a checkpoint with one more class row than the model loses its first (unused) row."""
        if self.drop_first_class and detr_class_count(state_dict) == self.config.num_labels + 1:
            state_dict = {k: v[1:] if is_class_row_key(k) else v for k, v in state_dict.items()}
        if set(state_dict) - set(self.state_dict()):
            state_dict = hub_layout_to_model(type(self), self.config, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def pixel_values(self, images: Tensor) -> Tensor:
        """``images [B, 3, H, W]`` on [0, 1] -> the network's input (resized and normalised as the processor)."""
        x = images
        if self.resize_to is not None and tuple(x.shape[-2:]) != self.resize_to:
            x = F.interpolate(x, size=self.resize_to, mode="bilinear", align_corners=False)
        if self.pixel_mean is not None and self.pixel_std is not None:
            mean = torch.tensor(self.pixel_mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(self.pixel_std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x

    def raw_outputs(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits [B, Q, C], boxes [B, Q, 4])``: class logits and normalised cxcywh boxes."""
        out = super().forward(pixel_values=self.pixel_values(images))
        return out.logits, out.pred_boxes

    def forward(self, images: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]] | None = None) -> Any:
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        if len(set(sizes)) == 1:
            batch = torch.stack(list(images))
        else:  # different sizes: each is resized to the processor's size (as transformers' processor does)
            if self.resize_to is None:
                raise ValueError("images of different sizes need a processor size to resize to")
            batch = torch.cat([F.interpolate(im[None], size=self.resize_to, mode="bilinear", align_corners=False)
                               for im in images])
        if self.training:
            if targets is None:
                raise ValueError("in training mode the model needs targets")
            hf_targets = [_hf_target(t, size) for t, size in zip(targets, sizes)]
            out = super().forward(pixel_values=self.pixel_values(batch), labels=hf_targets)
            return {"loss_total": out.loss} if out.loss_dict is None else dict(out.loss_dict)
        logits, boxes = self.raw_outputs(batch)
        results = []
        for b, (h, w) in enumerate(sizes):
            scores, labels, xyxy = select_detections(logits[b:b + 1], boxes[b:b + 1], self.detections_per_img)
            keep = scores[0] > self.score_thresh
            scale = torch.tensor([w, h, w, h], dtype=xyxy.dtype, device=xyxy.device)
            results.append({"boxes": xyxy[0][keep] * scale, "scores": scores[0][keep], "labels": labels[0][keep]})
        return results


def select_detections(logits: Tensor, boxes: Tensor, count: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top ``count`` (query, class) pairs by sigmoid score: ``scores [B, K]`` (descending), ``labels [B, K]``
    (1..C), ``boxes [B, K, 4]`` xyxy normalised to [0, 1] of the input; shared by the eager model and the export
    graph so that both rank the same way."""
    num_classes = logits.shape[-1]
    scores = logits.sigmoid().flatten(1)
    k = min(count, scores.shape[1])
    top, index = scores.topk(k, dim=1)
    query = torch.div(index, num_classes, rounding_mode="floor")
    cx, cy, w, h = boxes.unbind(-1)
    xyxy = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
    picked = torch.gather(xyxy, 1, query.unsqueeze(-1).expand(-1, -1, 4))
    return top, index % num_classes + 1, picked


def hub_layout_to_model(cls: Any, config: Any, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The tensors of a Hub ``model.safetensors`` under the model's parameter names: written with the config to a
    temporary folder and read back with ``cls.from_pretrained``, so that ``transformers`` applies its own renaming
    of saved names and re-ties shared heads."""
    import tempfile

    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory(prefix="o365zoo-hf-") as folder:
        config.save_pretrained(folder)
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(Path(folder) / "model.safetensors"),
                  metadata={"format": "pt"})
        loaded, info = cls.from_pretrained(folder, output_loading_info=True)
    problems = {k: sorted(v)[:3] for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if (v := info.get(k))}
    if problems:
        raise ValueError(f"the checkpoint does not fit {cls.__name__} built from its config.json: {problems}")
    return dict(loaded.state_dict())


def _hf_target(target: Mapping[str, Tensor], size: tuple[int, int]) -> dict[str, Tensor]:
    """Our target (xyxy pixels, labels 1..C) -> transformers' (``class_labels`` 0..C-1, normalised cxcywh)."""
    h, w = size
    boxes = target["boxes"].float()
    cxcywh = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2 / w, (boxes[:, 1] + boxes[:, 3]) / 2 / h,
                          (boxes[:, 2] - boxes[:, 0]) / w, (boxes[:, 3] - boxes[:, 1]) / h], dim=-1)
    return {"class_labels": target["labels"].long() - 1, "boxes": cxcywh}


@functools.cache
def zoo_detector(model_type: str) -> type:
    """The zoo subclass of the ``transformers`` class that runs ``model_type`` (cached: one class per family)."""
    try:
        import transformers
    except ModuleNotFoundError as exc:
        if exc.name != "transformers":
            raise
        raise ModuleNotFoundError('D-FINE, RT-DETR and LW-DETR models need transformers: pip install '
                                  '"objects365-zoo[detr]"', name="transformers") from None
    if model_type not in FAMILIES:
        raise ValueError(f"model_type {model_type!r} is not a DETR family the zoo runs; known: {', '.join(FAMILIES)}")
    base = getattr(transformers, FAMILIES[model_type])
    return type(f"Zoo{base.__name__}", (HfDetector, base), {"__module__": __name__})


def read_json_source(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A JSON document given as a dict, a local path, or an ``hf://``/``https://`` source fetched by
    :func:`zoo.hub.fetch` (cache, mirror and offline settings apply)."""
    if isinstance(source, Mapping):
        return dict(source)
    from .. import hub

    path = hub.fetch(str(source), progress=False)
    try:
        return json.loads(Path(path).read_text())
    except ValueError as exc:
        raise ValueError(f"{source}: not a JSON document ({exc})") from None


def id2label_names(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The class names of a ``config.json`` in label order (``id2label`` keys are strings "0".."C-1")."""
    id2label = config.get("id2label") or {}
    try:
        names = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise ValueError(f"id2label keys must be integers, got {sorted(id2label)[:5]}") from None
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"id2label must number the classes 0..C-1 without gaps, got {sorted(names)[:5]}...")
    return tuple(names[i] for i in range(len(names)))


def processor_settings(processor: Mapping[str, Any]) -> dict[str, Any]:
    """What a ``preprocessor_config.json`` of these models says about the input: ``resize_to`` (H, W; None for a
    size by edge), ``mean`` and ``std`` on the [0, 1] scale (None when ``do_normalize`` is false). A
    ``rescale_factor`` other than 1/255 is refused: photos reach the model on [0, 1]."""
    size = processor.get("size") or {}
    # A size by edge (shortest_edge / longest_edge, DeformableDetrImageProcessor's default) keeps the aspect ratio:
    # the zoo's letterbox into the spec's fixed square already does, so the canvas goes in as it is.
    resize_to = (int(size["height"]), int(size["width"])) if "height" in size and "width" in size else None
    if not processor.get("do_resize", True):
        resize_to = None
    if processor.get("do_rescale", True) and abs(float(processor.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise ValueError(f"processor rescale_factor {processor['rescale_factor']} is not 1/255")
    normalize = bool(processor.get("do_normalize", False))
    mean = tuple(processor["image_mean"]) if normalize else None
    std = tuple(processor["image_std"]) if normalize else None
    return {"resize_to": resize_to, "mean": mean, "std": std}


def hf_config(config: Mapping[str, Any], num_labels: int) -> Any:
    """A ``transformers`` config from a ``config.json`` dict with ``num_labels`` classes (``id2label`` kept when
    the count is the checkpoint's, else generic names: the zoo keeps the real names on ``model.categories``)."""
    from transformers import AutoConfig

    data = {k: v for k, v in config.items() if k not in ("architectures", "transformers_version")}
    names = id2label_names(data) if data.get("id2label") else ()
    if len(names) != num_labels:
        data["id2label"] = {str(i): f"class_{i + 1}" for i in range(num_labels)}
        data["label2id"] = {v: int(k) for k, v in data["id2label"].items()}
    model_type = data.pop("model_type", None)
    if model_type not in FAMILIES:
        raise ValueError(f"config.json model_type {model_type!r} is not one of {', '.join(FAMILIES)}")
    return AutoConfig.for_model(model_type, **data)


@register_builder("hf_detr")
def build_hf_detr(num_classes: int, preprocessing: Any = None, *, config: str | Path | Mapping[str, Any],
                  processor: str | Path | Mapping[str, Any] | None = None, categories: str | None = None,
                  unused_first_class: bool = False, **_: Any) -> nn.Module:
    """Build a ``transformers`` DETR-family detector from its ``config.json`` (a dict, path or hub source) with
    ``num_classes - 1`` classes, weights as the architecture initialises them. ``processor``: its
    ``preprocessor_config.json`` (resize and normalisation; default: no resize, no normalisation). ``categories``:
    a ``zoo.categories`` key the checkpoint's ``id2label`` must equal (whatever head this build gets).
    ``unused_first_class``: the checkpoint's class 0 is unused (heads indexed by Objects365 category id 1..365, as
    the D-FINE and LW-DETR Objects365 checkpoints are): its rows are dropped on load."""
    cfg_dict = read_json_source(config)
    names = id2label_names(cfg_dict) if cfg_dict.get("id2label") else ()
    if unused_first_class:
        names = names[1:]
    if categories is not None and names:  # the checkpoint's own classes, whatever head this build gets
        _check_id2label(names, categories, str(config), unused_first_class)
    settings = processor_settings(read_json_source(processor)) if processor is not None else {
        "resize_to": None, "mean": None, "std": None}
    cls = zoo_detector(cfg_dict.get("model_type", ""))
    model = cls(hf_config(cfg_dict, num_classes - 1))
    score, detections = (0.05, 300) if preprocessing is None else (preprocessing.score_threshold,
                                                                    preprocessing.max_detections)
    model.configure(score_thresh=score, detections=detections, **settings)
    model.drop_first_class = unused_first_class
    return model


def _check_id2label(names: tuple[str, ...], key: str, where: str, unused_first_class: bool) -> None:
    """Raise ValueError unless ``names`` (a config's id2label) is the registry list ``key``, saying so when the
    config has one extra, unused class 0 that the entry does not declare."""
    from ..categories import check_categories, get_categories

    if all(re.fullmatch(r"LABEL_\d+", n) for n in names):  # transformers' placeholder names: nothing to compare
        warnings.warn(f"{where}: id2label holds only placeholder names (LABEL_0, ...); the class list is taken from "
                      f"the registry ({key!r}) unchecked", stacklevel=3)
        return
    try:
        check_categories(names, key)
    except ValueError as exc:
        expected = get_categories(key)
        if not unused_first_class and len(names) == len(expected) + 1:
            try:
                check_categories(names[1:], key)
            except ValueError:
                pass
            else:
                raise ValueError(f"{where}: config.json has {len(names)} classes, {key!r} after an unused class 0 (a "
                                 "head indexed by category id); the registry entry needs build_kwargs "
                                 "unused_first_class=True") from None
        raise ValueError(f"{where}: id2label is not the registry's {key!r} list: {exc}") from None


def is_class_row_key(key: str) -> bool:
    """Whether a state-dict key is a per-class tensor of a DETR-family head (see :data:`CLASS_ROW_NAMES`)."""
    parts = key.split(".")
    return any(p in CLASS_ROW_NAMES for p in parts) or DENOISING_EMBEDDING in parts


def detr_class_count(state_dict: Mapping[str, Tensor]) -> int | None:
    """Classes of a DETR-family state dict (rows of its classifiers), or None when it has none."""
    for key, value in state_dict.items():
        if is_class_row_key(key) and DENOISING_EMBEDDING not in key and key.endswith(".weight"):
            return int(value.shape[0])
    return None


def transfer_detr_head(state_dict: Mapping[str, Tensor], mapping: Sequence[int | None], *,
                       seed: int = 0) -> dict[str, Tensor]:
    """A copy of ``state_dict`` whose class rows serve ``len(mapping)`` classes: destination class ``j`` takes the
    rows of source class ``mapping[j]`` in every classifier, the encoder's scorer and the denoising embedding;
    None gets fresh rows (weights drawn from ``torch.manual_seed(seed)`` with std 0.01, classifier biases at the
    prior of transformers' init for these heads, -log((1 - 0.01) / 0.01)); the denoising padding row is kept."""
    import math

    num_src = detr_class_count(state_dict)
    if num_src is None:
        raise ValueError("no DETR class head in this state dict")
    bad = [m for m in mapping if m is not None and not 0 <= m < num_src]
    if bad:
        raise ValueError(f"mapping refers to source class {bad[0]} but the checkpoint has {num_src} classes")
    prior_bias = -math.log((1 - 0.01) / 0.01)
    out = dict(state_dict)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for key in sorted(state_dict):
            if not is_class_row_key(key):
                continue
            src = state_dict[key]
            extra = 1 if DENOISING_EMBEDDING in key.split(".") else 0  # the padding row after the classes
            rows = list(mapping) + ([num_src] if extra else [])
            if key.endswith(".bias"):
                fresh = torch.full((len(rows), *src.shape[1:]), prior_bias, dtype=src.dtype)
            else:
                fresh = torch.randn(len(rows), *src.shape[1:], dtype=torch.float32).mul_(0.01).to(src.dtype)
            for j, r in enumerate(rows):
                if r is not None:
                    fresh[j] = src[r]
            out[key] = fresh
    return out
