"""Named models and their pretrained configs: one :class:`ModelSpec` per name, the only place these facts live."""
from __future__ import annotations

import difflib
import fnmatch
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .preprocess import Preprocessing
from .vocabulary import DETECTION, Task, cache_root


@dataclass(frozen=True)
class Metric:
    """A published or measured figure, with where it comes from.

    - ``dataset``: what it was measured on, e.g. ``"COCO val2017"``; ``task``: ``"detection"`` or
      ``"segmentation"``; ``name``: e.g. ``"box AP"``, ``"mIoU"``, ``"AP50"``; ``value``: as published.
    - ``source``: where the figure comes from (a README, a paper, the command that measured it).
    - ``of_these_weights``: False for a reference figure (a paper's result for the recipe), not a measurement of
      the weights the entry points to.
    """

    dataset: str
    task: Task
    name: str
    value: float
    source: str
    of_these_weights: bool = True


@dataclass(frozen=True)
class ModelSpec:
    """Everything the zoo knows of one named model; ``zoo.load``, training, export, serving and the model cards
    read it from here.

    - ``name``: the registry name ``zoo.load`` takes.
    - ``arch``: a ``zoo.models`` architecture; ``build_kwargs``: more arguments of ``zoo.models.build``.
    - ``task``: ``"detection"`` or ``"segmentation"``.
    - ``categories``: a ``zoo.categories`` key, e.g. ``"objects365_v1"``: labels 1..C name these, 0 is background;
      a segmenter with ``background=False`` has no background class (labels 0..C-1).
    - ``source``: the weights: ``https://...``, ``hf://org/repo/file@rev`` or a local path; None: none published.
    - ``sha256``: the weights' full digest, or the 8-hex prefix published in the file name; ``file_size``: bytes.
    - ``converter``: the ``zoo.convert`` converter of a foreign layout (MMDetection); None for our safetensors.
    - ``preprocessing``: normalisation, resize policy and post-processing defaults the weights expect.
    - ``license``: the weights' licence; ``recipe``: how they were (or can be) trained.
    - ``metrics``: published or measured figures; ``datasets``: the dataset keys the weights saw.
    - ``version``: of the weights under this name (the serving API reports it).
    - ``description``: what the model is for, and its caveats (the model card's text).
    - ``alias_of``: the entry that a short name (``fpn_r50_obj365``) repeats.
    """

    name: str
    arch: str
    task: Task
    categories: str
    source: str | None
    sha256: str | None
    file_size: int | None
    converter: str | None
    preprocessing: Preprocessing
    license: str
    recipe: str
    build_kwargs: dict[str, Any] = field(default_factory=dict)
    metrics: tuple[Metric, ...] = ()
    datasets: tuple[str, ...] = ()
    version: str = "1"
    description: str = ""
    background: bool = True
    alias_of: str | None = None

    @property
    def label_offset(self) -> int:
        """The label of ``categories[0]``: 1 where label 0 is background (every detector; VOC-style segmenters)."""
        return 1 if self.task == DETECTION or self.background else 0

    @property
    def num_outputs(self) -> int:
        """Classifier width: categories plus background (always for detectors)."""
        from .categories import get_categories

        return len(get_categories(self.categories)) + self.label_offset

    @property
    def published(self) -> bool:
        """Whether weights are published (``source`` is set): ``zoo.load`` can fetch them."""
        return self.source is not None


_SPECS: dict[str, ModelSpec] = {}
USER_REGISTRY_ENV = "O365ZOO_REGISTRY"  # the user registry file (default: <cache>/registry.json)


def register(spec: ModelSpec) -> ModelSpec:
    """Add a built-in entry (zoo/specs.py does, on import) and return it; a name can be registered once. Weights
    trained elsewhere go to the user registry with :func:`register_weights` instead."""
    if spec.name in _SPECS:
        raise ValueError(f"model {spec.name!r} registered twice")
    _SPECS[spec.name] = spec
    return spec


def list_models(pattern: str = "*") -> list[str]:
    """Registered names (built-in and the user registry's) matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in {*_SPECS, *_user_entries()} if fnmatch.fnmatchcase(n, pattern))


class UnknownModelError(LookupError):
    """No model of that name is registered."""


def get_spec(name: str) -> ModelSpec:
    """The spec registered as ``name``: a built-in entry (zoo/specs.py), else one of the user registry (models
    published with ``python -m training publish`` or :func:`register_weights`). Unknown names raise
    :class:`UnknownModelError` listing the closest known names."""
    if name in _SPECS:
        return _SPECS[name]
    user = _user_entries()
    if name in user:
        return _user_spec(name, user[name])
    known = list({*_SPECS, *user})
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known models: {', '.join(sorted(known))}"
    raise UnknownModelError(f"unknown model {name!r}{hint}")


def spec_from_dict(data: Mapping[str, Any], **overrides: object) -> ModelSpec:
    """A :class:`ModelSpec` from its ``dataclasses.asdict`` form (as published weights carry it in their metadata)."""
    from dataclasses import fields

    from .preprocess import Preprocessing

    data = {f.name: data[f.name] for f in fields(ModelSpec) if f.name in data}
    data["preprocessing"] = Preprocessing.from_dict(data["preprocessing"])
    data["metrics"] = tuple(Metric(**m) for m in data.get("metrics", ()))
    data["datasets"] = tuple(data.get("datasets", ()))
    return ModelSpec(**{**data, **overrides})


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, read from its JSON header alone (no tensors, no torch)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size <= 100_000_000:
                raise ValueError(f"header size {size}")
            header = json.loads(f.read(size))
        return dict(header.get("__metadata__") or {})
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None


def user_registry_path() -> Path:
    """``$O365ZOO_REGISTRY``, else ``registry.json`` in the cache folder (``$O365ZOO_CACHE``)."""
    return Path(os.environ.get(USER_REGISTRY_ENV) or cache_root() / "registry.json").expanduser()


def register_weights(name: str, weights: str | Path, *, registry: str | Path | None = None) -> ModelSpec:
    """Add ``name`` -> ``weights`` (one of our safetensors files carrying its spec, as training's publish step writes
    it) to the user registry, so that ``zoo.load(name)`` works in any later process; the file's sha256 is recorded
    and checked on load. A built-in name cannot be taken."""
    from .atomic import atomic_write
    from .hub import sha256_file

    if name in _SPECS:
        raise ValueError(f"{name!r} is a built-in model; publish under another name")
    weights = Path(weights).resolve()
    meta = safetensors_metadata(weights)
    if "spec" not in meta:
        raise ValueError(f"{weights}: its metadata carries no spec (write it with `python -m training publish`)")
    path = Path(registry) if registry is not None else user_registry_path()
    entries = _read_registry(path)
    entries[name] = {"weights": str(weights), "sha256": sha256_file(weights)}
    with atomic_write(path, "w") as f:
        json.dump({"format": "objects365-zoo-registry/1", "models": entries}, f, indent=2)
    return _user_spec(name, entries[name])


def _read_registry(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return {str(k): dict(v) for k, v in data["models"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"user registry {path} is not readable ({exc!r}); fix or delete it") from None


def _user_entries() -> dict[str, dict[str, Any]]:
    return _read_registry(user_registry_path())


def _user_spec(name: str, entry: dict[str, Any]) -> ModelSpec:
    weights = Path(entry["weights"])
    if not weights.is_file():
        raise UnknownModelError(f"{name!r} is in the user registry {user_registry_path()} but its weights "
                                f"{weights} are gone; publish it again or remove the entry")
    meta = safetensors_metadata(weights)
    spec = spec_from_dict(json.loads(meta["spec"]), name=name, source=str(weights), sha256=entry.get("sha256"),
                          file_size=weights.stat().st_size, converter=None)
    _ensure_categories(spec.categories, json.loads(meta.get("categories") or "[]"))
    return spec


def _ensure_categories(key: str, names: list[str]) -> None:
    """Make a published model's own category list known under its key (it travels in the weights' metadata)."""
    from .categories import get_categories, register_categories

    try:
        get_categories(key)
    except KeyError:
        if not names:
            raise ValueError(f"category list {key!r} is unknown and the weights do not carry it") from None
        register_categories(key, names)
