"""Turn a finished run into a zoo entry: safetensors weights, a registry-ready spec (JSON and a Python snippet for
``zoo.registry.ModelSpec``), a model card, and optionally an upload through ``zoo.hub.upload``.

A run folder holds ``run.json`` (written when training starts: arch, task, category names, preprocessing, recipe),
``last.pt`` (the training checkpoint) and, after evaluation, ``eval.json``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.atomic import atomic_write

if TYPE_CHECKING:
    from zoo.registry import ModelSpec

log = logging.getLogger(__name__)

RUN_INFO = "run.json"
EVAL_INFO = "eval.json"


def write_text(path: Path, text: str) -> None:
    """Atomic text write (:func:`zoo.atomic.atomic_write`)."""
    with atomic_write(path, "w") as f:
        f.write(text)


def category_key(names: tuple[str, ...], fallback: str) -> tuple[str, bool]:
    """The registered key whose list equals ``names``, else ``fallback`` (registered in this process);
    the flag says whether the snippet must register the list."""
    from zoo.categories import find_key, get_categories, register_categories

    key = find_key(list(names))
    if key is not None:
        return key, False
    try:
        if tuple(get_categories(fallback)) != tuple(names):
            raise ValueError(f"category key {fallback!r} is taken by another list; pick another model name")
    except KeyError:
        register_categories(fallback, list(names))
    return fallback, True


def build_spec(run: Mapping[str, Any], name: str, key: str, *, source: str | None, sha256: str | None,
               file_size: int | None, metrics: Sequence[Mapping[str, Any]] = (), license: str = "Apache-2.0",
               description: str = "") -> ModelSpec:
    """A ``zoo.registry.ModelSpec`` for the run's model; ``key``: its category key."""
    from zoo.preprocess import Preprocessing
    from zoo.registry import Metric, ModelSpec

    recipe = run["recipe"]
    return ModelSpec(
        name=name, arch=run["arch"], task=run["task"], categories=key, source=source, sha256=sha256,
        file_size=file_size, converter=None, preprocessing=Preprocessing.from_dict(run["preprocessing"]),
        license=license, build_kwargs=dict(run.get("build_kwargs", {})),
        recipe=f"objects365-zoo recipe `{recipe['name']}` ({recipe['max_iter']} iterations at batch "
               f"{recipe['batch_size']}, lr {recipe['lr']:.4g}, init {recipe.get('init') or 'scratch'}, head "
               f"{recipe.get('head')}); numbers from: {recipe['source']}",
        metrics=tuple(Metric(**m) for m in metrics), datasets=tuple(run.get("datasets", ())),
        description=description or f"{run['arch']} trained with objects365-zoo's `{recipe['name']}` recipe.")


def spec_json(spec: ModelSpec) -> str:
    data = dataclasses.asdict(spec)
    return json.dumps(data, indent=2)


def spec_snippet(spec: ModelSpec, names: tuple[str, ...], register_names: bool) -> str:
    """Python source that registers ``spec`` (and its category list when it is new)."""
    lines = ["from zoo.preprocess import Preprocessing", "from zoo.registry import Metric, ModelSpec, register", ""]
    if register_names:
        lines = ["from zoo.categories import register_categories"] + lines
        lines += [f"register_categories({spec.categories!r}, {list(names)!r})", ""]
    fields = []
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if f.name == "preprocessing":
            text = f"Preprocessing.from_dict({value.to_dict()!r})"
        elif f.name == "metrics":
            text = "(" + "".join(f"Metric(**{dataclasses.asdict(m)!r}), " for m in value) + ")"
        else:
            text = repr(value)
        fields.append(f"    {f.name}={text},")
    return "\n".join(lines + ["register(ModelSpec(", *fields, "))", ""])


def export_run(run_dir: str | Path, name: str, out_dir: str | Path | None = None, *, upload: str | None = None,
               license: str = "Apache-2.0", description: str = "",
               best: Mapping[str, Any] | None = None) -> dict[str, Path | str]:
    """Write ``<name>.safetensors``, ``<name>.spec.json``, ``<name>.spec.py`` and ``<name>.md`` to ``out_dir``
    (default: the run folder); with ``upload="hf://org/repo/file.safetensors"``, upload the weights and record the
    pinned hf:// source in the spec. ``best``: a state dict to publish instead of the last checkpoint's (e.g. the
    best validation epoch's)."""
    from zoo import hub
    from zoo.cards import render_card
    from zoo.checkpoint import save_weights

    from .checkpoint import load as load_checkpoint

    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    info_path = run_dir / RUN_INFO
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path} not found: {run_dir} is not a training run folder")
    run = json.loads(info_path.read_text())
    state = load_checkpoint(run_dir / "last.pt")
    if state["iteration"] < run["recipe"]["max_iter"]:
        log.warning("%s stopped at iteration %d of %d: publishing an unfinished model", run_dir,
                    state["iteration"], run["recipe"]["max_iter"])
    metrics = json.loads((run_dir / EVAL_INFO).read_text())["metrics"] if (run_dir / EVAL_INFO).is_file() else []

    weights = out / f"{name}.safetensors"
    key, new_key = category_key(tuple(run["categories"]), name)
    provisional = build_spec(run, name, key, source=None, sha256=None, file_size=None, metrics=metrics, license=license,
                             description=description)
    save_weights(best if best is not None else state["model"], weights,
                 {"arch": run["arch"], "categories": list(run["categories"]), "model": name,
                  "spec": spec_json(provisional)})
    source = upload and hub.upload(weights, upload)
    spec = build_spec(run, name, key, source=source or str(weights.resolve()), sha256=hub.sha256_file(weights),
                      file_size=weights.stat().st_size, metrics=metrics, license=license, description=description)
    json_path, py_path, card_path = out / f"{name}.spec.json", out / f"{name}.spec.py", out / f"{name}.md"
    paths: dict[str, Path | str] = {"weights": weights, "spec_json": json_path, "spec_py": py_path, "card": card_path}
    write_text(json_path, spec_json(spec))
    write_text(py_path, spec_snippet(spec, tuple(run["categories"]), new_key))
    write_text(card_path, render_card(spec))
    if source:
        paths["source"] = source
    return paths
