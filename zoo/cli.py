"""`zoo`: list, inspect, download, convert and try models; `zoo serve` comes from the serving extra."""
from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli_common import Parser, add_download_flags, run_cli, use_download_flags
from .registry import ModelSpec, get_spec, list_models
from .specs import DEFAULT_MODEL
from .vocabulary import DETECTION

if TYPE_CHECKING:
    from PIL import Image
    from torch import nn

    from .result_pictures import ImageTruth
    from .visualize import Comparison

_PLUGIN_GROUP = "objects365_zoo.cli"  # other packages add subcommands, each `main(argv, prog=...)`; zoo imports none


def _cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for name in list_models(args.pattern):
        spec = get_spec(name)
        metric = next((f"{m.name} {m.value}" for m in spec.metrics if m.of_these_weights), "-")
        rows.append((name, spec.arch, spec.categories, metric, "yes" if spec.published else "no"))
    header = ("name", "architecture", "categories", "published metric", "weights")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    spec = get_spec(args.name)
    if args.json:
        data = asdict(spec)
        data["published"] = spec.published
        print(json.dumps(data, indent=2))
    else:
        print(describe(spec))
    return 0


def describe(spec: ModelSpec, width: int = 100) -> str:
    """A readable summary of a registry entry: one ``field  value`` row per fact, long text wrapped to ``width``."""
    import textwrap

    from .categories import get_categories

    names = get_categories(spec.categories)
    preview = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    background = " plus background" if spec.label_offset else ""
    if spec.sha256 is None:
        digest = "-"
    elif len(spec.sha256) == 64:
        digest = spec.sha256
    else:
        digest = f"{spec.sha256}... (the prefix in the file name; the full digest is not published)"
    size = f"{spec.file_size / 2**20:.1f} MiB ({spec.file_size:,} bytes)" if spec.file_size else "unknown"
    rows = [("task", spec.task), ("architecture", spec.arch + (f" {json.dumps(spec.build_kwargs)}"
                                                               if spec.build_kwargs else "")),
            ("categories", f"{spec.categories}: {len(names)} class{'es' if len(names) != 1 else ''}{background} "
                           f"({preview})"),
            ("weights", spec.source or "not published yet"), ("sha256", digest), ("file size", size),
            ("licence", spec.license), ("preprocessing", _preprocessing_line(spec))]
    if spec.alias_of:
        rows.insert(0, ("alias of", spec.alias_of))
    rows += [("metric", f"{m.name} {m.value} on {m.dataset}" + ("" if m.of_these_weights else
                                                                 " (a reference figure, not of these weights)")
              + f"; source: {m.source}") for m in spec.metrics]
    rows.append(("description", spec.description or "-"))
    lines = [spec.name] + [textwrap.fill(value, width, initial_indent=f"  {key:<15s}", subsequent_indent=" " * 17,
                                         break_long_words=False, break_on_hyphens=False) for key, value in rows]
    return "\n".join(lines)


def _preprocessing_line(spec: ModelSpec) -> str:
    """The spec's :class:`Preprocessing` in one line; score, NMS and detection count for detectors only."""
    pre = spec.preprocessing
    if pre.resize == "letterbox":
        resize = f"letterbox into {pre.min_size}x{pre.max_size} (pad {pre.pad_value * 255:g}/255)"
    else:
        resize = f"shorter side {pre.min_size}, longer at most {pre.max_size}, padded to /{pre.size_divisible}"
    mean, std = (",".join(f"{v:.4g}" for v in values) for values in (pre.mean, pre.std))
    parts = [resize, f"mean {mean} std {std} on [0, 1]", pre.channels]
    if spec.task == DETECTION:
        parts += [f"score >= {pre.score_threshold:g}", f"NMS {pre.nms_threshold:g}",
                  f"at most {pre.max_detections} detections"]
    if pre.extra:
        parts.append(json.dumps(pre.extra))
    return "; ".join(parts)


def _cmd_download(args: argparse.Namespace) -> int:
    from . import hub

    spec = get_spec(args.name)
    if spec.source is None:
        print(f"{spec.name}: no published weights. {spec.description}", file=sys.stderr)
        return 1
    print(hub.fetch(spec.source, sha256=spec.sha256, mirror=args.mirror, cache_dir=args.cache_dir))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_file

    spec = get_spec(args.model)
    if spec.converter is None:
        print(f"{spec.name} is already in our layout; nothing to convert", file=sys.stderr)
        return 1
    out = convert_file(args.src, args.dst, spec)
    print(out)
    return 0


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def expand_images(inputs: list[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> image paths; an input matching nothing raises
    FileNotFoundError naming it."""
    import glob

    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            if not matches:
                raise FileNotFoundError(f"no file matches {item!r}")
            found += [p for p in matches if p.is_file()]
        else:
            raise FileNotFoundError(f"image not found: {item} (give files, folders or glob patterns)")
    return found


def _cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .api import load, model_categories, model_spec
    from .result_pictures import PictureWriter

    model_name, paths = _predict_inputs(args)
    if args.compare:
        paths, truth_of, categories = _annotated_images(args, paths)
    model = load(model_name, device=args.device, mirror=args.mirror, progress=not args.json)
    task, names = model_spec(model).task, model_categories(model)
    if task != DETECTION:
        raise ValueError(f"{model_name} is a {task} model; zoo predict runs detectors")
    wanted = _class_filter(args.classes, names)
    if args.compare:
        label_of = _model_labels(args.compare, categories, names)
        writer = PictureWriter(args.out, names, captions=not args.no_labels)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    totals = [0, 0, 0]  # TP, FP, FN over the compared images
    for path in tqdm(paths, desc="predict", unit="image", disable=None if len(paths) > 3 else True,
                     file=sys.stderr):
        image = _read_photo(path)
        if image is None:
            failed += 1
            continue
        found, keep, rows = _predict_one(model, image, names, wanted, args)
        line = {"image": str(path), "width": image.width, "height": image.height, "model": model_name,
                "detections": rows}
        comparison = None
        if args.compare:
            comparison = _compare_one(args, path, image, truth=truth_of[path], label_of=label_of, wanted=wanted,
                                      found=found, keep=keep)
            line.update(tp=comparison.tp, fp=comparison.fp, fn=comparison.fn)
            totals = [totals[0] + comparison.tp, totals[1] + comparison.fp, totals[2] + comparison.fn]
            writer.add(path.stem, image, comparison)
        _print_predictions(args, path, image, line, rows, comparison)
    if args.compare and failed < len(paths):
        sheet = writer.write_sheet()
        print(f"{len(paths) - failed} images at IoU {args.iou:g}: TP {totals[0]}  FP {totals[1]}  FN {totals[2]}; "
              f"pictures (matched ground truth green, matched predictions light blue, false negatives red, false "
              f"positives blue) in {args.out}, contact sheet worst first: {sheet}",
              file=sys.stderr if args.json else sys.stdout)
    elif args.out and not args.json:
        print(f"annotated images in {args.out}", file=sys.stderr)
    return 1 if failed == len(paths) else 0


def _predict_inputs(args: argparse.Namespace) -> tuple[str, list[Path]]:
    """The model name and the image files of ``zoo predict``'s arguments."""
    inputs = list(args.inputs)
    model_name = args.model
    # `zoo predict NAME IMAGE...` (the older form): a first word that names a model and no file
    if model_name is None and len(inputs) > 1 and not Path(inputs[0]).exists() and inputs[0] in list_models():
        model_name = inputs.pop(0)
    paths = expand_images(inputs)
    if not paths:
        raise FileNotFoundError(f"no images in {' '.join(inputs)} ({', '.join(IMAGE_SUFFIXES)})")
    return model_name or DEFAULT_MODEL, paths


def _read_photo(path: Path) -> Image.Image | None:
    """The photo at ``path`` in RGB, or None (said on stderr) when it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as photo:
            rgb: Image.Image = photo.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        print(f"zoo predict: {path}: not a readable image ({exc}); skipped", file=sys.stderr)
        return None
    return rgb


def _predict_one(model: nn.Module, image: Image.Image, names: tuple[str, ...], wanted: set[int] | None,
                 args: argparse.Namespace) -> tuple[dict[str, Any], list[int], list[dict[str, Any]]]:
    """``(detections, the indices kept by --score-threshold and --classes, their printed rows)``."""
    from .inference import detect

    found = detect(model, [image], device=args.device)[0]
    keep = [i for i in range(len(found["scores"])) if found["scores"][i] >= args.score_threshold
            and (wanted is None or int(found["labels"][i]) in wanted)]
    rows = [{"name": names[int(found["labels"][i]) - 1], "label": int(found["labels"][i]),
             "score": round(float(found["scores"][i]), 4),
             "box": [round(float(v), 1) for v in found["boxes"][i]]} for i in keep]
    return found, keep, rows


def _compare_one(args: argparse.Namespace, path: Path, image: Image.Image, *, truth: ImageTruth,
                 label_of: dict[int, int], wanted: set[int] | None, found: dict[str, Any], keep: list[int]
                 ) -> Comparison:
    """``--compare``: the kept detections of one image matched to its ground truth."""
    from .visualize import compare

    if truth.width and (truth.width, truth.height) != image.size:
        print(f"zoo predict: {path} is {image.width}x{image.height} but {args.compare} says "
              f"{truth.width}x{truth.height}; its ground-truth boxes may be misplaced", file=sys.stderr)
    gt = [k for k, cid in enumerate(truth.category_ids.tolist())
          if cid in label_of and (wanted is None or label_of[cid] in wanted)]
    return compare(found["boxes"][keep], found["labels"][keep], found["scores"][keep],
                   truth.boxes[gt], [label_of[int(truth.category_ids[k])] for k in gt], args.iou,
                   gt_crowd=truth.crowd[gt])


def _print_predictions(args: argparse.Namespace, path: Path, image: Image.Image, line: dict[str, Any],
                       rows: list[dict[str, Any]], comparison: Comparison | None) -> None:
    """One image's output: a JSON line or a readable block, and its drawn picture under --out."""
    from .result_pictures import counts
    from .visualize import draw_detections

    if args.json:
        print(json.dumps(line))
    else:
        counted = f"; {counts(comparison)}" if comparison is not None else ""
        print(f"{path} ({image.width}x{image.height}): {len(rows)} detection{'s' if len(rows) != 1 else ''}"
              f"{counted}")
        for row in rows:
            print(f"  {row['name']:>20s}  {row['score']:.3f}  [{', '.join(f'{v:.1f}' for v in row['box'])}]")
    if args.out and comparison is None:
        drawn = draw_detections(image, [r["box"] for r in rows], [r["label"] for r in rows],
                                [r["score"] for r in rows], [r["name"] for r in rows],
                                captions=not args.no_labels)
        drawn.save(args.out / f"{path.stem}.jpg", quality=90)


def _annotated_images(args: argparse.Namespace, paths: list[Path]
                      ) -> tuple[list[Path], dict[Path, ImageTruth], dict[int, str]]:
    """For ``--compare``: the images listed in the annotation file, each one's ground truth, and the file's
    categories (id -> name); the images left out are said once on stderr."""
    from .result_pictures import load_coco_truth

    if not args.out:
        raise ValueError("--compare needs --out DIR for the comparison pictures")
    if not 0.0 < args.iou <= 1.0:
        raise ValueError(f"--iou must be in (0, 1], got {args.iou}")
    truth = load_coco_truth(args.compare)
    truth_of = {path: truth.find(path) for path in paths}
    missing = [path for path, found in truth_of.items() if found is None]
    if len(missing) == len(paths):
        raise ValueError(f"no image given ({len(paths)}) is listed in {args.compare}: images are matched by the file "
                         f"name in its 'images' list")
    if missing:
        shown = ", ".join(p.name for p in missing[:5]) + (" ..." if len(missing) > 5 else "")
        print(f"zoo predict: {len(missing)} images are not listed in {args.compare}, skipped: {shown}",
              file=sys.stderr)
    found = {path: image for path, image in truth_of.items() if image is not None}
    return list(found), found, truth.categories


def _model_labels(ann: str, categories: dict[int, str], classes: tuple[str, ...]) -> dict[int, int]:
    """Category id -> the model's label, by name; the names the model lacks are said once on stderr."""
    from .result_pictures import map_categories

    label_of, unknown = map_categories(categories, classes)
    if unknown:
        shown = ", ".join(unknown[:8]) + (f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else "")
        print(f"zoo predict: {len(unknown)} categories of {ann} are not classes of the model, their boxes are left "
              f"out: {shown}", file=sys.stderr)
    return label_of


def _class_filter(classes: str | None, categories: tuple[str, ...]) -> set[int] | None:
    """Labels of a comma-separated list of class names (None: every class); unknown names raise with close ones."""
    if not classes:
        return None
    import difflib

    labels = set()
    for name in (c.strip() for c in classes.split(",") if c.strip()):
        if name not in categories:
            close = difflib.get_close_matches(name, categories, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"--classes: {name!r} is not a class of this model{hint}")
        labels.add(categories.index(name) + 1)
    return labels


def _cmd_cards(args: argparse.Namespace) -> int:
    from .cards import stale_cards, write_cards

    if args.check:
        stale = stale_cards(args.out)
        if stale:
            print(f"out of sync with the registry: {', '.join(stale)}; run `zoo cards`", file=sys.stderr)
            return 1
        return 0
    for path in write_cards(args.out):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. '*obj365*'")
    p.set_defaults(fn=_cmd_list)
    p = sub.add_parser("info", help="what the registry knows of a model: a summary, or --json for everything")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="the whole registry entry as JSON")
    p.set_defaults(fn=_cmd_info)
    p = sub.add_parser("download", help="fetch and verify a model's weights into the cache")
    p.add_argument("name")
    add_download_flags(p)
    p.add_argument("--cache-dir", help="cache folder (or set O365ZOO_CACHE)")
    p.set_defaults(fn=_cmd_download)
    p = sub.add_parser("convert", help="convert a foreign checkpoint (e.g. MMDetection .pth) into our safetensors")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--model", default="fpn_r50_obj365", help="registry name whose layout and categories SRC has")
    p.set_defaults(fn=_cmd_convert)
    p = sub.add_parser("predict", help="detect objects in images (files, folders, globs)")
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files, folders or glob patterns ('img/*.jpg')")
    p.add_argument("--model", help=f"zoo model name or .safetensors (default: {DEFAULT_MODEL}, ships in the package)")
    p.add_argument("--out", type=Path, help="folder for the images with boxes and names drawn")
    p.add_argument("--compare", metavar="ANN.json",
                   help="COCO ground truth (images matched by file_name, categories by name): draw each image's "
                        "matched ground truth green, matched predictions light blue, false negatives red, false "
                        "positives blue into --out, with a contact sheet worst first (most FP + FN)")
    p.add_argument("--iou", type=float, default=0.5, help="IoU at which --compare matches a prediction (default 0.5)")
    p.add_argument("--json", action="store_true", help="one JSON line per image instead of the table")
    p.add_argument("--no-labels", action="store_true", help="draw boxes without captions")
    p.add_argument("--classes", help="comma-separated class names to keep, e.g. 'person,dog'")
    p.add_argument("--score-threshold", type=float, default=0.3)
    p.add_argument("--device", default=None)
    add_download_flags(p)
    p.set_defaults(fn=_cmd_predict)
    p = sub.add_parser("cards", help="write (or --check) model_cards/ from the registry")
    p.add_argument("--out", type=Path, default=Path("model_cards"))
    p.add_argument("--check", action="store_true")
    p.set_defaults(fn=_cmd_cards)
    for name, ep in _plugins().items():
        sub.add_parser(name, help=f"from {ep.value} (see `zoo {name} --help`)")
    return parser


def _plugins() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=_PLUGIN_GROUP)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    plugins = _plugins()
    if argv and argv[0] in plugins:  # the plugin parses its own arguments (a missing extra fails here, in one line)
        prog = f"zoo {argv[0]}"
        return run_cli(prog, lambda: plugins[argv[0]].load()(argv[1:], prog=prog), debug="--debug" in argv)
    args = build_parser().parse_args(argv)
    use_download_flags(getattr(args, "mirror", None), getattr(args, "offline", None))
    return run_cli(f"zoo {args.command}", lambda: args.fn(args), debug=getattr(args, "debug", False))


if __name__ == "__main__":
    sys.exit(main())
