"""Named models and their pretrained configs: one :class:`ModelSpec` per name, the only place these facts live."""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field

from .preprocess import Preprocessing


@dataclass(frozen=True)
class Metric:
    """A published or measured figure, with where it comes from."""

    dataset: str
    task: str  # "detection" | "segmentation"
    name: str  # e.g. "box AP", "mIoU", "AP50"
    value: float
    source: str
    of_these_weights: bool = True  # False: a paper's figure for the recipe, not a measurement of weights we ship


@dataclass(frozen=True)
class ModelSpec:
    name: str
    arch: str  # a zoo.models architecture
    task: str  # "detection" | "segmentation"
    categories: str  # a zoo.categories key, e.g. "objects365_v1"; labels 1..C name these (0 = background)
    source: str | None  # https://..., hf://org/repo/file@rev, or a local path; None: no published weights yet
    sha256: str | None  # full digest, or the 8-hex prefix published in the file name
    file_size: int | None  # bytes, when known
    converter: str | None  # zoo.convert name for foreign layouts, None for our safetensors
    preprocessing: Preprocessing
    license: str
    recipe: str
    build_kwargs: dict = field(default_factory=dict)
    metrics: tuple[Metric, ...] = ()
    datasets: tuple[str, ...] = ()
    version: str = "1"
    description: str = ""
    background: bool = True  # segmentation: whether output 0 is a background class not in `categories`
    alias_of: str | None = None

    @property
    def label_offset(self) -> int:
        """The label of ``categories[0]``: 1 where label 0 is background (every detector; VOC-style segmenters)."""
        return 1 if self.task == "detection" or self.background else 0

    @property
    def num_outputs(self) -> int:
        """Classifier width: categories plus background (always for detectors)."""
        from .categories import get_categories

        return len(get_categories(self.categories)) + self.label_offset

    @property
    def published(self) -> bool:
        return self.source is not None


_SPECS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _SPECS:
        raise ValueError(f"model {spec.name!r} registered twice")
    _SPECS[spec.name] = spec
    return spec


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` (e.g. ``"*obj365*"``), sorted."""
    return sorted(n for n in _SPECS if fnmatch.fnmatchcase(n, pattern))


class UnknownModelError(LookupError):
    """No model of that name is registered."""


def get_spec(name: str) -> ModelSpec:
    try:
        return _SPECS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_SPECS), n=5, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known models: {', '.join(sorted(_SPECS))}"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None
