"""The export command lines: ``python -m export`` (:func:`export_main`) and ``python -m export.parity``
(:func:`parity_main`), and what they and ``python -m export.triton`` share (:func:`run_cli`, :func:`parse_size`).

This module imports both :mod:`export.api` and :mod:`export.parity`; neither of those imports it, so the library
modules form no cycle.
"""
from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from zoo import cli_common
from zoo.cli_common import Parser, add_download_flags, use_download_flags
from zoo.vocabulary import EXPORT_PRECISIONS, F32, FP32, INT8, RUNTIME_PRECISIONS

from .api import ParityError, default_image_size, export_model, parity_of_export_dir, tolerance_for
from .artifact import ExportError
from .contract import output_names
from .parity import check_parity, load_photos
from .quantize import METHODS
from .runtime import runner_for
from .source import load_source


def run_cli(action: Callable[[], int], prog: str, debug: bool = False,
            expected: tuple[type[Exception], ...] = ()) -> int:
    """Run a command-line action: a parity failure exits 1 with its table on stderr; other expected failures
    (:func:`zoo.cli_common.describe`, export errors, ``expected``) exit 2 with one line."""
    def checked() -> int:
        try:
            return action()
        except ParityError as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return 1

    return cli_common.run_cli(prog, checked, debug=debug, expected=(ExportError, TypeError, *expected),
                              extra="export")


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"512"`` -> (512, 512); ``"480x640"`` -> (480, 640) (height x width); None -> None."""
    if text is None:
        return None
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise ValueError(f"size must be H or HxW in pixels, got {text!r}") from None
    if len(parts) not in (1, 2):
        raise ValueError(f"size must be H or HxW in pixels, got {text!r}")
    return (parts[0], parts[-1])


def export_main(argv: list[str] | None = None) -> int:
    """``python -m export NAME|CHECKPOINT --format onnx|torchscript --out DIR``."""
    import torch

    parser = Parser(prog="python -m export", description=(
        "Export a zoo model (registry name or .safetensors checkpoint) to a fixed-size, dynamic-batch graph "
        "with padded outputs, check parity with the eager model on real photos, and write DIR/model.{onnx,pt} "
        "and DIR/metadata.json atomically."))
    parser.add_argument("model", help="registry name or path to one of our .safetensors checkpoints")
    parser.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    parser.add_argument("--out", required=True, help="output folder (created; must be empty unless --overwrite)")
    parser.add_argument("--size", help="H or HxW input size (default: preprocessing min_size, square)")
    parser.add_argument("--random-weights", action="store_true", help="architecture only, random weights")
    parser.add_argument("--score-threshold", type=float, help="detector score threshold override (recorded)")
    parser.add_argument("--no-parity", action="store_true", help="skip the parity check")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--precision", choices=(*EXPORT_PRECISIONS, "auto"), default=FP32,
                        help="int8: post-training int8 of the ONNX export with an accuracy report; auto: fp32 and "
                        "int8 exports in OUT/fp32 and OUT/int8, every runtime and precision timed here, the fastest "
                        "that passes written to OUT/choice.json")
    parser.add_argument("--int8-method", choices=METHODS, default="nncf",
                        help="int8: NNCF (default; fastest on OpenVINO) or ONNX Runtime's quantize_static")
    parser.add_argument("--calibration", help="int8: folder of photos or COCO JSON (default: packaged photos)")
    parser.add_argument("--eval-ann", help="int8: COCO JSON of a labelled set for AP (with --eval-images)")
    parser.add_argument("--eval-images", help="int8: the labelled set's image folder")
    parser.add_argument("--max-ap-drop", type=float, default=1.0,
                        help="int8: refuse the export when AP drops by more points than this (default 1)")
    parser.add_argument("--batch", type=int, default=1, help="auto: images per timed call (default 1)")
    add_download_flags(parser)
    args = parser.parse_args(argv)
    use_download_flags(args.mirror, args.offline)
    torch.set_num_threads(args.threads)

    if args.precision != FP32 and args.format != "onnx":
        parser.error(f"--precision {args.precision} needs --format onnx")
    quantization = {"calibration": args.calibration, "eval_ann": args.eval_ann, "eval_images": args.eval_images,
                    "max_ap_drop": args.max_ap_drop, "method": args.int8_method}

    def export() -> int:
        accuracy = None
        if args.precision == "auto":
            from .fastest import CHOICE_FILE, choose_fastest

            choice = choose_fastest(args.model, args.out, image_size=parse_size(args.size),
                                    pretrained=not args.random_weights, score_threshold=args.score_threshold,
                                    parity=not args.no_parity, overwrite=args.overwrite, batch=args.batch,
                                    threads=args.threads, **quantization)
            for row in choice["candidates"]:
                print(f"{row['runtime']:12} {row['precision']:5} {row['images_per_s']:8.1f} images/s"
                      f"{'' if row['passed'] else '  (accuracy refused)'}")
            print(f"fastest: {choice['choice']['runtime']} {choice['choice']['precision']}; zoo serve "
                  f"{choice['choice']['serve']}\nwrote {Path(args.out) / CHOICE_FILE}")
            return 0
        if args.precision == INT8:
            from .quantize import export_int8, summary

            path, report, accuracy = export_int8(
                args.model, args.out, image_size=parse_size(args.size), pretrained=not args.random_weights,
                score_threshold=args.score_threshold, parity=not args.no_parity, overwrite=args.overwrite,
                **quantization)
        else:
            path, report = export_model(args.model, args.out, fmt=args.format, image_size=parse_size(args.size),
                                        pretrained=not args.random_weights, score_threshold=args.score_threshold,
                                        parity=not args.no_parity, overwrite=args.overwrite)
        if report is not None:
            print(report.table())
        if accuracy is not None:
            print(summary(accuracy))
        print(f"wrote {path}")
        return 0

    return run_cli(export, parser.prog, getattr(args, "debug", False))


def parity_main(argv: list[str] | None = None) -> int:
    """``python -m export.parity NAME|CHECKPOINT|EXPORT_DIR``: compare an export with the eager model."""
    import torch

    parser = Parser(prog="python -m export.parity", description=(
        "Compare an export with the eager model on real photos. TARGET is an export folder (checked against its "
        "source checkpoint) or a model name/checkpoint (exported to a temporary folder, checked, discarded)."))
    parser.add_argument("target")
    parser.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    parser.add_argument("--size", help="H or HxW of the export (default: the preprocessing's min_size, square)")
    parser.add_argument("--random-weights", action="store_true", help="architecture with random weights")
    parser.add_argument("--score-threshold", type=float, help="detector score threshold override")
    parser.add_argument("--photos", nargs="+", help="photo files (default: scikit-image's sample photos)")
    parser.add_argument("--runtime", choices=("onnxruntime", "openvino"), default="onnxruntime",
                        help="what runs an ONNX export (openvino: pip install openvino)")
    parser.add_argument("--precision", choices=RUNTIME_PRECISIONS, default=F32,
                        help="openvino's inference precision; bf16 is held to the looser BF16_TOLERANCE")
    add_download_flags(parser)
    args = parser.parse_args(argv)
    if args.precision != F32 and args.runtime != "openvino":
        parser.error("--precision bf16 needs --runtime openvino")
    if args.runtime != "onnxruntime" and args.format != "onnx":
        parser.error("--runtime openvino runs ONNX exports only")
    use_download_flags(args.mirror, args.offline)
    torch.set_num_threads(min(2, torch.get_num_threads()))

    def parity() -> int:
        photos = load_photos(args.photos) if args.photos else None
        if (Path(args.target) / "metadata.json").is_file():
            report = parity_of_export_dir(args.target, photos=photos, runtime=args.runtime, precision=args.precision)
        else:
            source = load_source(args.target, pretrained=not args.random_weights,
                                 score_threshold=args.score_threshold)
            size = parse_size(args.size) or default_image_size(source.preprocessing)
            with tempfile.TemporaryDirectory() as tmp:
                # the export's own check (onnxruntime, fp32) first, then the asked runtime's if that one passed
                path, own = export_model(source, Path(tmp) / "export", fmt=args.format, image_size=size,
                                         photos=photos, raise_on_failure=False)
                assert own is not None  # parity=True (export_model's default) always reports
                report = own
                if path is not None and args.runtime != "onnxruntime":
                    runner = runner_for("onnx", path, output_names(source.task), args.runtime, args.precision)
                    report = check_parity(source, runner, size, photos, tolerance_for(args.precision))
        print(report.table())
        return 0 if report.passed else 1

    return run_cli(parity, parser.prog, getattr(args, "debug", False), expected=(RuntimeError,))
