"""`zoo`: list, inspect, download, convert and try models; `zoo serve` comes from the serving extra."""
from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

from .registry import get_spec, list_models

_PLUGIN_GROUP = "objects365_zoo.cli"  # other packages (serving) add subcommands here; zoo imports none of them


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
    data = asdict(spec)
    data["published"] = spec.published
    print(json.dumps(data, indent=2))
    return 0


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


def _cmd_predict(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    from .api import load
    from .visualize import draw_detections

    model = load(args.name, device=args.device)
    image = Image.open(args.image).convert("RGB")
    with torch.inference_mode():
        out = model([pil_to_tensor(image).float().div(255).to(args.device or "cpu")])[0]
    keep = out["scores"] >= args.score_threshold
    boxes, scores, labels = out["boxes"][keep].tolist(), out["scores"][keep].tolist(), out["labels"][keep].tolist()
    names = [model.categories[label - 1] for label in labels]
    for box, score, name in zip(boxes, scores, names):
        print(f"{name:>24s}  {score:.3f}  [{', '.join(f'{v:.1f}' for v in box)}]")
    if args.out:
        draw_detections(image, boxes, labels, scores, names).save(args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


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
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. '*obj365*'")
    p.set_defaults(fn=_cmd_list)
    p = sub.add_parser("info", help="everything the registry knows of a model")
    p.add_argument("name")
    p.set_defaults(fn=_cmd_info)
    p = sub.add_parser("download", help="fetch and verify a model's weights into the cache")
    p.add_argument("name")
    p.add_argument("--mirror", help="base URL replacing the source's origin (or set O365ZOO_MIRROR)")
    p.add_argument("--cache-dir", help="cache folder (or set O365ZOO_CACHE)")
    p.set_defaults(fn=_cmd_download)
    p = sub.add_parser("convert", help="convert a foreign checkpoint (e.g. MMDetection .pth) into our safetensors")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--model", default="fpn_r50_obj365", help="registry name whose layout and categories SRC has")
    p.set_defaults(fn=_cmd_convert)
    p = sub.add_parser("predict", help="detect objects in an image")
    p.add_argument("name")
    p.add_argument("image", type=Path)
    p.add_argument("--out", type=Path, help="write the image with boxes and names drawn")
    p.add_argument("--score-threshold", type=float, default=0.3)
    p.add_argument("--device", default=None)
    p.set_defaults(fn=_cmd_predict)
    p = sub.add_parser("cards", help="write (or --check) model_cards/ from the registry")
    p.add_argument("--out", type=Path, default=Path("model_cards"))
    p.add_argument("--check", action="store_true")
    p.set_defaults(fn=_cmd_cards)
    for name, ep in _plugins().items():
        sub.add_parser(name, help=f"from {ep.value} (see `zoo {name} --help`)")
    return parser


def _plugins() -> dict:
    return {ep.name: ep for ep in entry_points(group=_PLUGIN_GROUP)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    plugins = _plugins()
    if argv and argv[0] in plugins:  # the plugin parses its own arguments
        return int(plugins[argv[0]].load()(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (LookupError, ValueError, FileNotFoundError, OSError) as exc:
        print(f"zoo {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
