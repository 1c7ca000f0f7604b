"""What ``python -m training train`` builds from a recipe before the loop starts: the training set, the model (from
scratch, from a zoo model, or a backbone transferred across architectures), the lr of the paper's L2-norm rule, and
the run folder's ``run.json``."""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from zoo.preprocess import Preprocessing
from zoo.registry import ModelSpec
from zoo.vocabulary import SEGMENTATION

from . import distributed, publish
from .distributed import Context
from .recipes import Recipe

log = logging.getLogger("training")


@dataclass(frozen=True)
class BuiltModel:
    """A model to train and what ``run.json`` records about it."""

    model: nn.Module
    arch: str
    preprocessing: Preprocessing
    build_kwargs: dict[str, Any]
    categories: tuple[str, ...]


def build_train_dataset(recipe: Recipe, ctx: Context) -> Any:
    """The recipe's training set with its training transforms. Rank 0 builds the annotation index first; the other
    ranks then memory-map it."""
    from .data import build_dataset
    from .transforms import detection_train, segmentation_train

    seg = recipe.task == SEGMENTATION
    transforms = (segmentation_train(recipe.crop, recipe.scale_range, recipe.flip) if seg
                  else detection_train(recipe.min_sizes, recipe.max_size, recipe.flip))

    def make() -> Any:
        return build_dataset(recipe.dataset_format, recipe.train_ann, recipe.train_images,
                             categories=recipe.categories, on_unknown=recipe.on_unknown, transforms=transforms)

    dataset = make() if ctx.rank == 0 else None
    distributed.barrier()
    return dataset if dataset is not None else make()


def build_model(recipe: Recipe, dataset: Any, *, progress: bool = True) -> BuiltModel:
    """The model ``recipe`` trains on ``dataset``: ``recipe.arch`` from scratch, the zoo model ``recipe.init`` (its
    class head transferred or reinitialised by ``recipe.head``), or, for a segmentation recipe whose ``init`` is
    another architecture, ``recipe.arch`` with that model's ResNet trunk. ``dataset``: the training set
    (``categories`` of a detection set, ``num_classes`` of a segmentation set). Detection models resize to the
    recipe's largest ``min_sizes`` and ``max_size``."""
    seg = recipe.task == SEGMENTATION
    if seg:
        from zoo.categories import get_categories

        if recipe.categories is None:
            raise ValueError(f"segmentation recipe {recipe.name!r} needs categories=<zoo category key>")
        names = tuple(get_categories(recipe.categories))
        num_classes = dataset.num_classes
    else:
        names = tuple(dataset.categories)
        num_classes = len(names) + 1
    init_spec = _init_spec(recipe.init) if recipe.init else None
    if recipe.init and init_spec is not None and init_spec.arch != recipe.arch and seg:
        built = _transferred_backbone(recipe.init, recipe.arch, num_classes, names, init_spec.arch, progress)
    elif recipe.init:
        import zoo
        from zoo.api import model_spec

        if recipe.head not in ("transfer", "reinit"):
            raise ValueError(f"head must be 'transfer' or 'reinit', got {recipe.head!r}")
        head: Literal["transfer", "reinit"] = "transfer" if recipe.head == "transfer" else "reinit"
        model = zoo.load(recipe.init, pretrained=True, categories=list(names), head=head, progress=progress)
        spec = model_spec(model)
        built = BuiltModel(model, spec.arch, spec.preprocessing, dict(spec.build_kwargs), names)
    else:
        from zoo import models
        from zoo.preprocess import DETECTION_800, SEGMENTATION_512

        # SyncBN pretraining needs trainable BatchNorm in the backbone (the engine converts it to SyncBatchNorm).
        build_kwargs = {"norm": "bn"} if recipe.sync_bn and not seg else {}
        pre = SEGMENTATION_512 if seg else DETECTION_800
        built = BuiltModel(models.build(recipe.arch, num_classes, preprocessing=pre, **build_kwargs), recipe.arch,
                           pre, build_kwargs, names)
    if seg:
        return built
    pre = dataclasses.replace(built.preprocessing, min_size=max(recipe.min_sizes), max_size=recipe.max_size)
    transform = getattr(built.model, "transform", None)
    if transform is not None:
        transform.min_size, transform.max_size = (pre.min_size,), pre.max_size
    return dataclasses.replace(built, preprocessing=pre)


def _transferred_backbone(init: str, arch: str, num_classes: int, names: tuple[str, ...], init_arch: str,
                          progress: bool) -> BuiltModel:
    """``arch`` with the ResNet trunk of the zoo model ``init`` (the paper's Objects365 detector backbone under
    PSPNet)."""
    import zoo
    from zoo import models
    from zoo.convert.transfer import transfer_backbone
    from zoo.preprocess import SEGMENTATION_512

    source = zoo.load(init, pretrained=True, progress=progress)
    model = models.build(arch, num_classes, preprocessing=SEGMENTATION_512)
    log.info("init: %d ResNet trunk tensors from %s (%s)", transfer_backbone(source.state_dict(), model), init,
             init_arch)
    return BuiltModel(model, arch, SEGMENTATION_512, {}, names)


def _init_spec(init: str) -> ModelSpec:
    """The spec of ``--init`` (registry name or one of our safetensors files)."""
    from zoo.api import resolve_spec

    return resolve_spec(init)[0]


def load_state_dict(path: str) -> Any:
    """A state dict from one of our safetensors files or a foreign checkpoint (its ``state_dict`` / ``model`` entry
    when it has one)."""
    if path.endswith(".safetensors"):
        from zoo.checkpoint import load_weights

        return load_weights(path)[0]
    from zoo.checkpoint import load_foreign

    state = load_foreign(path)
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if key in state:
                return state[key]
    return state


def apply_lr_rule(recipe: Recipe, model: nn.Module) -> Recipe:
    """The recipe with its ``lr_rule`` applied: ``l2norm`` scales ``lr`` by the backbone's L2-norm ratio to
    ``imagenet_weights`` (:mod:`training.lr_rule`), ``none`` leaves it."""
    if recipe.lr_rule == "l2norm":
        if not (recipe.init and recipe.imagenet_weights):
            raise SystemExit("lr_rule=l2norm needs init=<pretrained model> and imagenet_weights=<ImageNet backbone "
                             "file> to compare norms (or set lr=... and lr_rule=none)")
        from .lr_rule import l2_scaled_lr

        lr = l2_scaled_lr(recipe.lr, model.state_dict(), load_state_dict(recipe.imagenet_weights))
        return dataclasses.replace(recipe, lr=lr, lr_rule="none")
    if recipe.lr_rule != "none":
        raise SystemExit(f"unknown lr_rule {recipe.lr_rule!r}: none or l2norm")
    return recipe


def write_run_info(out: Path, built: BuiltModel, recipe: Recipe, ctx: Context) -> None:
    """``run.json``: what :func:`training.publish.export_run` needs to publish the run's weights."""
    run = {"arch": built.arch, "task": recipe.task, "categories": list(built.categories),
           "preprocessing": built.preprocessing.to_dict(), "build_kwargs": built.build_kwargs,
           "recipe": recipe.to_dict(), "world_size": ctx.world_size,
           "datasets": [Path(recipe.train_ann).name or recipe.dataset_format]}
    publish.write_text(out / publish.RUN_INFO, json.dumps(run, indent=2))
