"""``python -m training data ...``: the command line that downloads and prepares datasets (the parser imports nothing
heavy; each command imports its module when it runs).

    python -m training data objects365 --root DIR [--split train|val] [--fix-names] [--subset NAME ...] [--mirror URL]
"""
from __future__ import annotations

import argparse


def add_data_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``data objects365`` to the subcommands ``sub`` of ``python -m training``."""
    from zoo.cli_common import add_download_flags

    data = sub.add_parser("data", help="download and prepare datasets")
    datasets = data.add_subparsers(dest="dataset", required=True)
    o = datasets.add_parser("objects365", help="Objects365 v2: download, extract, check, fix names, write subsets",
                            description="Objects365 v2 from the official site: see training/data/objects365.py")
    o.add_argument("--root", required=True, help="dataset folder (downloads/, <split>/, annotations/)")
    o.add_argument("--split", default="val", help="train or val (default val)")
    o.add_argument("--version", default="v2", help="dataset version: v2, the one the official site serves")
    o.add_argument("--fix-names", action="store_true", help="write category names with the v2 typos corrected")
    o.add_argument("--subset", action="append", metavar="NAME",
                   help="full, sample, coco80 or non-coco80; repeatable (default: sample, coco80 and non-coco80)")
    o.add_argument("--sample-size", type=int, default=5000, help="images in the 'sample' subset (default 5000)")
    o.add_argument("--seed", type=int, default=0, help="seed of the 'sample' subset")
    o.add_argument("--keep-archives", action="store_true", help="keep the archives after extracting them")
    o.add_argument("--no-progress", action="store_true")
    add_download_flags(o)
    o.set_defaults(fn=objects365_cmd)


def objects365_cmd(args: argparse.Namespace) -> int:
    """Print the completeness check and the subsets written; exit status 1 when images are missing or mismatched."""
    from .data.objects365 import DEFAULT_SUBSETS, prepare

    result, written = prepare(args.root, args.split, version=args.version, mirror=args.mirror,
                              fix_names=args.fix_names, subsets=args.subset or DEFAULT_SUBSETS,
                              sample_size=args.sample_size, seed=args.seed, keep_archives=args.keep_archives,
                              progress=not args.no_progress)
    print(result.summary())
    if not result.complete:
        print(f"  left out of the subsets: {len(result.missing) + len(result.mismatched):,} images")
    for name, info in written.items():
        print(f"{name:<11} {info['images']:>10,} images {info['boxes']:>11,} boxes  {info['path']}")
    return 0 if result.complete else 1
