"""``python -m export NAME|CHECKPOINT --format onnx|torchscript --out DIR``."""
from __future__ import annotations

import sys

import torch

from .api import export_model, parse_size, run_cli
from zoo.cli_common import Parser, add_download_flags, use_download_flags


def main(argv: list[str] | None = None) -> int:
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
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                        help="int8: ONNX Runtime static quantization of the ONNX export, with an accuracy report")
    parser.add_argument("--calibration", help="int8: folder of photos or COCO JSON (default: packaged photos)")
    parser.add_argument("--eval-ann", help="int8: COCO JSON of a labelled set for AP (with --eval-images)")
    parser.add_argument("--eval-images", help="int8: the labelled set's image folder")
    parser.add_argument("--max-ap-drop", type=float, default=1.0,
                        help="int8: refuse the export when AP drops by more points than this (default 1)")
    add_download_flags(parser)
    args = parser.parse_args(argv)
    use_download_flags(args.mirror, args.offline)
    torch.set_num_threads(args.threads)

    if args.precision == "int8" and args.format != "onnx":
        parser.error("--precision int8 needs --format onnx")

    def export() -> int:
        accuracy = None
        if args.precision == "int8":
            from .quantize import export_int8, summary

            path, report, accuracy = export_int8(
                args.model, args.out, image_size=parse_size(args.size), pretrained=not args.random_weights,
                score_threshold=args.score_threshold, parity=not args.no_parity, overwrite=args.overwrite,
                calibration=args.calibration, eval_ann=args.eval_ann, eval_images=args.eval_images,
                max_ap_drop=args.max_ap_drop)
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


if __name__ == "__main__":
    sys.exit(main())
