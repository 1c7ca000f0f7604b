"""``zoo.load``: resolve a name, fetch and verify its weights, convert them, and return a ready model."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .registry import ModelSpec, get_spec

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn


class NoPublishedWeightsError(LookupError):
    """The registry names the model but no weights have been published for it yet."""


def load(
    name: str,
    pretrained: bool = True,
    num_classes: int | None = None,
    categories: str | Sequence[str] | None = None,
    device: str | torch.device | None = None,
    *,
    head: Literal["transfer", "reinit"] = "transfer",
    mirror: str | None = None,
    offline: bool | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> nn.Module:
    """Return the model ``name`` (a registry name or a path to one of our ``.safetensors`` files) in eval mode.

    - ``pretrained``: fetch (hub: cache, sha256, ``mirror``; ``offline``: the cache only) and load the published
      weights; a foreign layout is converted once and the converted safetensors cached beside the download.
    - ``categories``: a category key (``"coco"``, ``"voc"``...) or a list of names: the class head is transferred
      through the category mapping (mapped rows copied, background kept, the rest freshly initialised: the paper's
      backbone-and-head transfer). ``head="reinit"`` reinitialises the whole class head (backbone-only transfer).
    - ``num_classes``: a fresh head with that many classes (background included for detectors) when no names are
      given.
    - ``device``: where the model is moved; ``cache_dir``: the download cache (default ``$O365ZOO_CACHE``, else
      ``~/.cache/objects365-zoo``); ``progress``: a download progress bar on stderr.
    The model carries ``model.categories`` (names of labels 1..C) and ``model.spec`` (typed reads:
    :func:`model_categories`, :func:`model_spec`). An unknown name raises
    :class:`~zoo.registry.UnknownModelError` (with close names), an entry without published weights
    :class:`NoPublishedWeightsError` unless ``pretrained=False``.
    """
    try:
        from . import models
    except ModuleNotFoundError as exc:
        if exc.name not in ("torch", "torchvision"):
            raise
        raise ModuleNotFoundError(f"zoo.load builds PyTorch models and {exc.name} is not installed: pip install "
                                  '"objects365-zoo[torch]" (the torch-free serving-onnx install serves exported '
                                  "models only)", name=exc.name) from None
    from .categories import get_categories

    spec, weights = resolve_spec(name)
    src_names = _spec_categories(spec, weights)
    state_dict = None
    if pretrained:
        state_dict, ckpt_names = _pretrained_state_dict(spec, weights, mirror=mirror, offline=offline,
                                                        cache_dir=cache_dir, progress=progress)
        src_names = ckpt_names or src_names
    if state_dict is None:
        model = models.build(spec.arch, len(src_names) + spec.label_offset, preprocessing=spec.preprocessing,
                             **spec.build_kwargs)
    else:
        model = _build_loaded(spec, state_dict, src_names)

    names = src_names
    if categories is not None or num_classes is not None or head != "transfer":
        if head not in ("transfer", "reinit"):
            raise ValueError(f"head must be 'transfer' or 'reinit', not {head!r}")
        if categories is not None:
            names = tuple(get_categories(categories)) if isinstance(categories, str) else tuple(categories)
            if num_classes is not None and num_classes != len(names) + spec.label_offset:
                raise ValueError(f"num_classes={num_classes} disagrees with {len(names)} categories "
                                 f"(+{spec.label_offset} background)")
        elif num_classes is not None:
            names = tuple(f"class_{i}" for i in range(1, num_classes + 1 - spec.label_offset))
        model = _transfer(model, spec, src_names, names, head, categories is not None)

    describe(model, spec, names)
    model.eval()
    if device is not None:
        model.to(device)
    return model


def describe(model: nn.Module, spec: ModelSpec, categories: Sequence[str]) -> nn.Module:
    """Attach ``spec`` and ``categories`` (names of labels ``spec.label_offset``...) to ``model`` as :func:`load`
    does, and return it; :func:`model_spec` and :func:`model_categories` read them back."""
    # plain attributes (not parameters, buffers or submodules, the only values nn.Module.__setattr__ is typed for)
    object.__setattr__(model, "spec", spec)
    object.__setattr__(model, "categories", tuple(categories))
    return model


def model_spec(model: nn.Module) -> ModelSpec:
    """The registry spec of a model from :func:`load` (or :func:`describe`)."""
    spec = getattr(model, "spec", None)
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"this {type(model).__name__} carries no zoo spec: load it with zoo.load, or attach one with "
                        "zoo.describe")
    return spec


def model_categories(model: nn.Module) -> tuple[str, ...]:
    """The category names of a model from :func:`load` (or :func:`describe`): ``[i]`` names label
    ``i + spec.label_offset``."""
    categories = getattr(model, "categories", None)
    if not isinstance(categories, tuple):
        raise TypeError(f"this {type(model).__name__} carries no category names: load it with zoo.load, or attach "
                        "them with zoo.describe")
    return categories


def resolve_spec(name: str) -> tuple[ModelSpec, Path | None]:
    """A registry name, or a path to one of our safetensors files (its metadata names a registered model or carries
    a full spec, as training's publish step writes it)."""
    path = Path(name)
    if not (name.endswith(".safetensors") and path.is_file()):
        return get_spec(name), None
    from dataclasses import replace

    from .registry import list_models, safetensors_metadata, spec_from_dict

    meta = safetensors_metadata(path)
    source, size = str(path.resolve()), path.stat().st_size
    if meta.get("model") in list_models():
        return replace(get_spec(meta["model"]), source=source, sha256=None, file_size=size, converter=None), path
    try:
        return spec_from_dict(json.loads(meta["spec"]), source=source, sha256=None, file_size=size,
                              converter=None), path
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: its metadata names no registered model and no complete spec ({exc!r}); it was "
                         f"not written by objects365-zoo: convert it first with `zoo convert`") from None


def _spec_categories(spec: ModelSpec, weights: Path | None) -> tuple[str, ...]:
    from .categories import get_categories

    if weights is not None:
        from .checkpoint import read_metadata

        meta = read_metadata(weights)
        if "categories" in meta:
            return tuple(json.loads(meta["categories"]))
    return tuple(get_categories(spec.categories))


def _pretrained_state_dict(spec: ModelSpec, weights: Path | None, **fetch_kw: Any
                           ) -> tuple[dict[str, Tensor], tuple[str, ...] | None]:
    """The weights and, when the checkpoint names them, its category names (which outrank the spec's)."""
    from . import hub
    from .checkpoint import load_weights

    if weights is not None:
        return load_weights(weights)[0], None
    if spec.source is None:
        raise NoPublishedWeightsError(f"{spec.name}: {spec.description}")
    path = hub.fetch(spec.source, sha256=spec.sha256, **fetch_kw)
    if spec.converter is None:
        state_dict, meta = load_weights(path)
        return state_dict, tuple(json.loads(meta["categories"])) if "categories" in meta else None
    return _converted(spec, Path(path))


def _converted(spec: ModelSpec, path: Path) -> tuple[dict[str, Tensor], tuple[str, ...] | None]:
    """Convert a foreign checkpoint once; the result is cached as safetensors beside the download, its metadata
    naming the source's sha256 and its own sha256 recorded in ``<file>.sha256`` (``sha256sum`` format). A cached
    file that fails either check is converted again, with a warning."""
    import warnings

    from . import hub
    from .atomic import atomic_write
    from .checkpoint import load_weights, save_weights
    from .convert import get_converter, mmdet_classes, read_foreign_checkpoint

    converter = spec.converter
    if converter is None:
        raise ValueError(f"{spec.name} names no converter: its weights are ours, nothing to convert")
    cached = path.with_name(path.name + f".{converter}.safetensors")
    record = cached.with_name(cached.name + ".sha256")
    source_sha256 = hub.sha256_file(path)
    if cached.is_file():
        problem = _cache_problem(cached, record, source_sha256)
        if problem is None:
            state_dict, meta = load_weights(cached)
            return state_dict, tuple(json.loads(meta["categories"])) if meta.get("categories") else None
        warnings.warn(f"{cached}: {problem}; converting {path} again", stacklevel=4)
    state_dict, meta = read_foreign_checkpoint(path)
    names = _checkpoint_categories(spec, mmdet_classes(meta))
    state_dict = get_converter(converter)(state_dict)
    save_weights(state_dict, cached, {"model": spec.name, "source": spec.source, "source_sha256": source_sha256,
                                      "categories": list(names) if names else ""})
    with atomic_write(record, "w") as f:
        f.write(f"{hub.sha256_file(cached)}  {cached.name}\n")
    return state_dict, names


def _cache_problem(cached: Path, record: Path, source_sha256: str) -> str | None:
    """Why the converted file ``cached`` cannot be used (None when it can): its sha256 must be the one in ``record``
    and its metadata must name the source's."""
    from . import hub
    from .checkpoint import read_metadata

    recorded = record.read_text().split()[:1] if record.is_file() else []
    if not recorded:
        return f"no sha256 recorded in {record}"
    if (actual := hub.sha256_file(cached)) != recorded[0]:
        return f"sha256 {actual}, expected {recorded[0]} (recorded in {record}): the file changed after it was written"
    if (converted_from := read_metadata(cached).get("source_sha256")) != source_sha256:
        return f"converted from a source with sha256 {converted_from}, not the current {source_sha256}"
    return None


def _checkpoint_categories(spec: ModelSpec, class_names: list[str] | None) -> tuple[str, ...] | None:
    """A checkpoint is tied to the exact list it was trained with. When its own meta names a different known list
    than the registry (MMDetection's 3.x configs of the 1350k v1 models point at the v2 dataset), the checkpoint's
    list wins, with a warning; a list that matches nothing we know is refused."""
    import warnings

    from .categories import check_categories, find_key, get_categories

    if class_names is None:
        return None
    key = find_key(class_names)
    if key == spec.categories:
        return get_categories(key)
    if key is not None:
        warnings.warn(f"{spec.name}: the registry says {spec.categories!r} but the checkpoint's meta lists the "
                      f"{key!r} categories; using the checkpoint's list", stacklevel=3)
        return get_categories(key)
    check_categories(class_names, spec.categories)  # raises, naming the closest known list
    return tuple(class_names)


def _build_loaded(spec: ModelSpec, state_dict: dict[str, Tensor], names: Sequence[str]) -> nn.Module:
    """Build on the meta device and adopt the checkpoint's tensors (``assign=True``): random initialisation of
    weights about to be overwritten is most of a build's cost."""
    import torch

    from . import models
    from .convert import class_count

    found = class_count(state_dict, spec.arch)
    expected = len(names) + spec.label_offset
    if found is not None and found != expected:
        raise ValueError(
            f"{spec.name}: the checkpoint has {found - spec.label_offset} classes but the model expects "
            f"{len(names)} ({spec.categories}); it belongs to another category list"
        )
    with torch.device("meta"):
        model = models.build(spec.arch, expected, preprocessing=spec.preprocessing, **spec.build_kwargs)
    # Weights may be stored in a narrower dtype (the demo ships fp16): adopt them in the dtype the model computes in.
    expected_dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    state_dict = {k: v.to(expected_dtypes[k]) if k in expected_dtypes and v.is_floating_point() else v
                  for k, v in state_dict.items()}
    missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(
            f"{spec.name}: checkpoint does not fit architecture {spec.arch}: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"{spec.arch}: tensors outside the state dict stayed uninitialised: {left[:5]}")
    return model


def _transfer(model: nn.Module, spec: ModelSpec, src: Sequence[str], dst: Sequence[str],
              head: Literal["transfer", "reinit"], by_name: bool) -> nn.Module:
    from .categories import map_indices
    from .convert.transfer import transfer_head

    mapping = map_indices(list(src), list(dst)) if by_name else [None] * len(dst)
    background = spec.label_offset == 1
    state_dict = transfer_head(model.state_dict(), spec.arch, mapping, mode=head, src_background=background,
                               dst_background=background)
    return _build_loaded(spec, state_dict, dst)
