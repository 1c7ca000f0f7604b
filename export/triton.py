"""Triton model repositories: ``python -m export.triton NAME --repo DIR``.

For a model ``m`` (its registry name, made Triton-safe) the repository holds, each with version ``1``:

- ``m_onnx``: ``onnxruntime_onnx`` platform, the ONNX export (dynamic batch);
- ``m_libtorch`` (``--torchscript``): ``pytorch_libtorch`` platform, the TorchScript export;
- ``m_python``: Python backend running the same ONNX file with ONNX Runtime inside ``model.py`` (serves on a Triton
  that only has the Python backend, like the one in nvidia-pytriton);
- ``m_preprocess`` (photo bytes -> letterboxed batch), ``m_postprocess`` (detection: boxes back to photo pixels;
  segmentation: the label map cropped, resized back to the photo and PNG-encoded, since photos differ in size)
  and the ensemble ``m``: ``image`` bytes -> ``boxes, scores, labels, num_detections`` (detection) or
  ``label_map`` PNG bytes (segmentation), through ``m_python`` or ``m_onnx`` (``--ensemble-backend``).
Every model has ``max_batch_size`` and ``dynamic_batching``; the graph models get an instance group of the chosen
``--device`` (``cpu``: KIND_CPU, ``gpu``: KIND_GPU); Python steps run on CPU. Each config.pbtxt is checked by
parsing it into ``tritonclient``'s ``ModelConfig`` before the repository is published (atomically).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TypedDict

import torch
from PIL import Image
from torch import nn

from zoo.cli_common import Parser, add_download_flags, use_download_flags
from zoo.vocabulary import SEGMENTATION

from .api import export_model
from .artifact import METADATA_FILE, ExportError, pad_value, read_metadata, staged_dir
from .cli import parse_size, run_cli
from .contract import DETECTION_OUTPUTS, triton_name
from .source import ExportSource, load_source

TEMPLATES = Path(__file__).resolve().parent / "triton_models"
LETTERBOX = Path(__file__).resolve().parents[1] / "zoo" / "letterbox.py"
DEVICES = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
TYPES = {"float32": "TYPE_FP32", "int64": "TYPE_INT64", "int32": "TYPE_INT32", "bytes": "TYPE_STRING"}


class Scheduling(TypedDict):
    """The batching and instance settings that every model of a repository shares."""

    max_batch_size: int
    instances: int
    queue_delay_us: int


def _tensor(name: str, dtype: str, dims: list[int], *, scalar: bool = False) -> str:
    reshape = " reshape: { shape: [ ] }" if scalar else ""
    return f'  {{ name: "{name}" data_type: {TYPES[dtype]} dims: [ {", ".join(map(str, dims))} ]{reshape} }}'


def _io(kind: str, tensors: list[str]) -> str:
    return f"{kind} [\n" + ",\n".join(tensors) + "\n]\n"


def _graph_outputs(meta: dict, suffix: str = "", libtorch: bool = False, count_dims: bool = False,
                   only: tuple[str, ...] | None = None) -> list[str]:
    """The graph's output tensors; ``num_detections`` is ``[B]`` in the graph (``reshape: []``), or declared and
    sent as ``[B, 1]`` with ``count_dims`` (ensemble outputs, whose shapes Triton checks step to step)."""
    height, width = meta["input"]["shape"][2:]
    d = int(meta["preprocessing"]["max_detections"])
    k = len(meta["categories"]) + meta["label_offset"]
    if meta["task"] == SEGMENTATION:
        specs = [("labels", "int64", [height, width], False), ("logits", "float32", [k, height, width], False)]
    else:
        specs = [("boxes", "float32", [d, 4], False), ("scores", "float32", [d], False),
                 ("labels", "int64", [d], False), ("num_detections", "int64", [1], not count_dims)]
    return [_tensor(f"{n}__{i}" if libtorch else n + suffix, t, dims, scalar=s)
            for i, (n, t, dims, s) in enumerate(specs) if only is None or n in only]


def _batching(max_batch_size: int, queue_delay_us: int) -> str:
    return (f"max_batch_size: {max_batch_size}\n"
            f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}\n")


def _instances(kind: str, count: int) -> str:
    return f"instance_group [ {{ count: {count} kind: {kind} }} ]\n"


def _params(**values: str) -> str:
    return "".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in values.items())


def graph_config(name: str, meta: dict, *, platform: str, max_batch_size: int, device: str, instances: int,
                 queue_delay_us: int, params: dict[str, str] | None = None) -> str:
    """config.pbtxt of a graph model (``onnxruntime_onnx``, ``pytorch_libtorch`` or ``python``)."""
    height, width = meta["input"]["shape"][2:]
    head = f'name: "{name}"\n' + ('backend: "python"\n' if platform == "python" else f'platform: "{platform}"\n')
    images = _tensor("images", "float32", [3, height, width])
    return (head + _batching(max_batch_size, queue_delay_us) + _io("input", [images])
            + _io("output", _graph_outputs(meta, libtorch=platform == "pytorch_libtorch"))
            + _instances(DEVICES[device] if platform != "python" else "KIND_CPU", instances)
            + _params(**(params or {})))


def preprocess_config(name: str, meta: dict, *, max_batch_size: int, instances: int, queue_delay_us: int) -> str:
    height, width = meta["input"]["shape"][2:]
    return (f'name: "{name}"\nbackend: "python"\n' + _batching(max_batch_size, queue_delay_us)
            + _io("input", [_tensor("image", "bytes", [1])])
            + _io("output", [_tensor("images", "float32", [3, height, width]), _tensor("scale", "float32", [1]),
                             _tensor("photo_size", "int32", [2])])
            + _instances("KIND_CPU", instances)
            + _params(pad_value=repr(pad_value(meta))))


def _ensemble_outputs(meta: dict) -> tuple[tuple[str, ...], list[str]]:
    """What the ensemble (and its postprocessing step) answers: names and tensor declarations."""
    if meta["task"] == SEGMENTATION:
        return ("label_map",), [_tensor("label_map", "bytes", [1])]
    return DETECTION_OUTPUTS, _graph_outputs(meta, count_dims=True)


def _postprocessed(meta: dict) -> tuple[str, ...]:
    """The graph outputs the postprocessing step takes."""
    return ("labels",) if meta["task"] == SEGMENTATION else DETECTION_OUTPUTS


def postprocess_config(name: str, meta: dict, *, max_batch_size: int, instances: int, queue_delay_us: int) -> str:
    inputs = _graph_outputs(meta, suffix="_in", only=_postprocessed(meta)) + [
        _tensor("scale", "float32", [1]), _tensor("photo_size", "int32", [2])]
    return (f'name: "{name}"\nbackend: "python"\n' + _batching(max_batch_size, queue_delay_us)
            + _io("input", inputs) + _io("output", _ensemble_outputs(meta)[1])
            + _instances("KIND_CPU", instances))


def ensemble_config(name: str, meta: dict, *, graph_model: str, pre: str, post: str, max_batch_size: int) -> str:
    outputs = _postprocessed(meta)
    final, declared = _ensemble_outputs(meta)
    graph_map = "\n".join(f'      output_map {{ key: "{o}" value: "raw_{o}" }}' for o in outputs)
    post_in = "\n".join(f'      input_map {{ key: "{o}_in" value: "raw_{o}" }}' for o in outputs)
    post_out = "\n".join(f'      output_map {{ key: "{o}" value: "{o}" }}' for o in final)
    return (f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {max_batch_size}\n'
            + _io("input", [_tensor("image", "bytes", [1])]) + _io("output", declared)
            + "ensemble_scheduling {\n  step [\n"
            f'    {{\n      model_name: "{pre}"\n      model_version: -1\n'
            '      input_map { key: "image" value: "image" }\n'
            '      output_map { key: "images" value: "images" }\n'
            '      output_map { key: "scale" value: "scale" }\n'
            '      output_map { key: "photo_size" value: "photo_size" }\n    },\n'
            f'    {{\n      model_name: "{graph_model}"\n      model_version: -1\n'
            '      input_map { key: "images" value: "images" }\n' + graph_map + "\n    },\n"
            f'    {{\n      model_name: "{post}"\n      model_version: -1\n' + post_in + "\n"
            '      input_map { key: "scale" value: "scale" }\n'
            '      input_map { key: "photo_size" value: "photo_size" }\n' + post_out + "\n    }\n  ]\n}\n")


def validate_config(text: str, where: str = "config.pbtxt"):
    """Parse ``text`` into Triton's ``ModelConfig``; a clear error names the file and the problem."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ExportError(f"{where}: invalid Triton model config: {exc}") from None


def _write_model(repo: Path, name: str, config: str, files: dict[str, Path] | None = None) -> None:
    validate_config(config, f"{name}/config.pbtxt")
    folder = repo / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(config)
    for target, src in (files or {}).items():
        shutil.copy2(src, folder / "1" / target)


def build_repository(model_or_name: str | Path | nn.Module, repo_dir: str | Path, *,
                     image_size: tuple[int, int] | None = None, pretrained: bool = True,
                     score_threshold: float | None = None, max_batch_size: int = 8, device: str = "cpu",
                     instances: int = 1, queue_delay_us: int = 5000, torchscript: bool = False,
                     ensemble_backend: str = "python", parity: bool = True,
                     photos: dict[str, Image.Image] | None = None, overwrite: bool = False) -> Path:
    """Write a Triton model repository for one model (see the module docstring); returns ``repo_dir``."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {sorted(DEVICES)}, got {device!r}")
    if ensemble_backend not in ("python", "onnxruntime"):
        raise ValueError(f"ensemble_backend must be 'python' or 'onnxruntime', got {ensemble_backend!r}")
    if not 1 <= max_batch_size <= 1024:
        raise ValueError(f"max_batch_size must be in 1..1024, got {max_batch_size}")
    source: ExportSource = load_source(model_or_name, pretrained=pretrained, score_threshold=score_threshold)
    base = triton_name(source.name)
    common = Scheduling(max_batch_size=max_batch_size, instances=instances, queue_delay_us=queue_delay_us)
    with staged_dir(repo_dir, overwrite=overwrite) as repo:
        onnx_dir = repo / f"{base}_onnx" / "1"
        export_model(source, onnx_dir, fmt="onnx", image_size=image_size, parity=parity, photos=photos)
        meta = read_metadata(onnx_dir)
        _write_model(repo, f"{base}_onnx", graph_config(f"{base}_onnx", meta, platform="onnxruntime_onnx",
                                                         device=device, **common))
        _write_model(repo, f"{base}_python", graph_config(
            f"{base}_python", meta, platform="python", device=device, **common,
            params={"onnx_path": f"{base}_onnx/1/model.onnx"}),
            {"model.py": TEMPLATES / "detector_onnx.py", METADATA_FILE: onnx_dir / METADATA_FILE})
        if torchscript:
            ts_dir = repo / f"{base}_libtorch" / "1"
            export_model(source, ts_dir, fmt="torchscript", image_size=image_size, parity=parity, photos=photos)
            _write_model(repo, f"{base}_libtorch", graph_config(
                f"{base}_libtorch", meta, platform="pytorch_libtorch", device=device, **common))
        files = {"letterbox.py": LETTERBOX}
        _write_model(repo, f"{base}_preprocess", preprocess_config(f"{base}_preprocess", meta, **common),
                     {"model.py": TEMPLATES / "preprocess.py", **files})
        _write_model(repo, f"{base}_postprocess", postprocess_config(f"{base}_postprocess", meta, **common),
                     {"model.py": TEMPLATES / "postprocess.py", **files})
        graph_model = f"{base}_python" if ensemble_backend == "python" else f"{base}_onnx"
        _write_model(repo, base, ensemble_config(base, meta, graph_model=graph_model, pre=f"{base}_preprocess",
                                                 post=f"{base}_postprocess", max_batch_size=max_batch_size))
    return Path(repo_dir)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m export.triton", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="registry name or .safetensors checkpoint")
    parser.add_argument("--repo", required=True, help="repository folder to create")
    parser.add_argument("--size", help="H or HxW input size (default: preprocessing min_size, square)")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--device", choices=sorted(DEVICES), default="cpu", help="instance kind of graph models")
    parser.add_argument("--instances", type=int, default=1, help="instances per model")
    parser.add_argument("--queue-delay-us", type=int, default=5000, help="dynamic batcher queue delay")
    parser.add_argument("--torchscript", action="store_true", help="also a pytorch_libtorch model")
    parser.add_argument("--ensemble-backend", choices=("python", "onnxruntime"), default="python",
                        help="graph model of the ensemble (python: serves on a Python-backend-only Triton)")
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--score-threshold", type=float)
    parser.add_argument("--no-parity", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    add_download_flags(parser)
    args = parser.parse_args(argv)
    use_download_flags(args.mirror, args.offline)
    torch.set_num_threads(2)

    def build() -> int:
        repo = build_repository(args.model, args.repo, image_size=parse_size(args.size),
                                pretrained=not args.random_weights, score_threshold=args.score_threshold,
                                max_batch_size=args.max_batch_size, device=args.device, instances=args.instances,
                                queue_delay_us=args.queue_delay_us, torchscript=args.torchscript,
                                ensemble_backend=args.ensemble_backend, parity=not args.no_parity,
                                overwrite=args.overwrite)
        for config in sorted(repo.glob("*/config.pbtxt")):
            print(config.relative_to(repo))
        return 0

    return run_cli(build, parser.prog, getattr(args, "debug", False))


if __name__ == "__main__":
    sys.exit(main())
