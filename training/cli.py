"""``python -m training``: train, evaluate, publish, list recipes.

    python -m training train RECIPE [key=value ...] [--init NAME] [--head transfer|reinit] [--out DIR]
    torchrun --nproc_per_node N -m training train RECIPE ...
    python -m training eval MODEL --ann PATH [--images DIR] [--metric coco|voc|voc07|citypersons|miou] [--out FILE]
    python -m training publish RUN_DIR NAME [--upload hf://org/repo/file.safetensors]
    python -m training recipes
    python -m training stats ANN.json [--images DIR] [--map coco|voc] [--json] [--plots DIR]
    python -m training diagnose PRED.json ANN.json [--json] [--plots DIR] [--pictures DIR [--images IMGDIR]
                                [--worst N]]
    python -m training plot RUN_DIR [RUN_DIR ...] --out FIG.png
    python -m training data objects365 --root DIR [--split train|val] [--fix-names] [--subset NAME ...]
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.vocabulary import DETECTION

if TYPE_CHECKING:
    from .recipes import Recipe

log = logging.getLogger("training")


def _setup_logging(rank: int = 0) -> None:
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s", datefmt="%H:%M:%S")


def train(args: argparse.Namespace) -> int:
    import torch

    from . import distributed, publish
    from .build import apply_lr_rule, build_model, build_train_dataset, write_run_info
    from .engine import Trainer, seed_everything

    recipe = _recipe_of(args)
    for module in recipe.imports:
        importlib.import_module(module)
    ctx = distributed.setup(args.device)
    _setup_logging(ctx.rank)
    seed_everything(recipe.seed)
    out = Path(args.out or Path("runs") / recipe.name)

    dataset = build_train_dataset(recipe, ctx)
    built = build_model(recipe, dataset, progress=ctx.is_main)
    recipe = apply_lr_rule(recipe, built.model)
    recipe = recipe.for_dataset(len(dataset)).for_batch(recipe.ims_per_gpu * ctx.world_size)
    if ctx.is_main:
        write_run_info(out, built, recipe, ctx)
    torch.manual_seed(recipe.seed + ctx.rank)
    result = Trainer(built.model, dataset, recipe, out, ctx, progress=not args.no_progress).fit()
    distributed.teardown()
    if result["interrupted"]:
        log.warning("stopped at iteration %d; run the same command again to resume", result["iteration"])
        return 143
    if ctx.is_main:
        paths = publish.export_run(out, args.name or recipe.name)
        log.info("finished at iteration %d; weights %s", result["iteration"], paths["weights"])
        if recipe.val_ann and recipe.dataset_format == "coco":
            _evaluate_run(out, str(paths["weights"]), recipe, str(ctx.device))
    return 0


def _recipe_of(args: argparse.Namespace) -> Recipe:
    """The named recipe with the command line's ``key=value`` overrides, ``--init`` and ``--head``."""
    from .recipes import get_recipe

    recipe = get_recipe(args.recipe).override(args.overrides)
    if args.init is not None:
        recipe = dataclasses.replace(recipe, init=None if args.init == "none" else args.init)
    if args.head is not None:
        recipe = dataclasses.replace(recipe, head=args.head)
    return recipe


def _evaluate_run(out: Path, weights: str, recipe: Recipe, device: str) -> None:
    """COCO box AP of a finished run's weights on the recipe's validation set, written to the run folder."""
    from . import publish

    stats = evaluate_model(weights, recipe.val_ann, recipe.val_images, device=device)
    dataset_name = Path(recipe.val_ann).name
    metrics = [{"dataset": dataset_name, "task": DETECTION, "name": "box AP", "value": stats["AP"],
                "source": f"objects365-zoo eval of run {out}"}]
    publish.write_text(out / publish.EVAL_INFO, json.dumps({"stats": stats, "metrics": metrics}, indent=2))
    log.info("eval on %s: %s", dataset_name, json.dumps(stats))


def evaluate_model(model_name: str, ann: str, images: str | None = None, *, metric: str = "coco",
                   split: str | None = None, device: str = "cpu", batch_size: int = 2) -> dict:
    """``metric`` of a zoo model (name or .safetensors path) on a dataset (see :mod:`training.evaluation.run`);
    COCO box AP by default, categories matched by name, dataset categories the model does not know left out."""
    import zoo

    from .evaluation.run import evaluate_on

    model = zoo.load(model_name, pretrained=True, progress=False)
    return evaluate_on(model, metric, ann, images, split=split, device=device, batch_size=batch_size)


def evaluate(args: argparse.Namespace) -> int:
    from .evaluation.run import format_report

    _setup_logging()
    for module in args.imports:
        importlib.import_module(module)
    values = evaluate_model(args.model, args.ann, args.images, metric=args.metric, split=args.split,
                            device=args.device or "cpu", batch_size=args.batch_size)
    print(format_report(args.metric, values))
    if args.out:
        from .publish import write_text

        write_text(Path(args.out), json.dumps({k: None if math.isnan(v) else v for k, v in values.items()}, indent=2))
    return 0


def finetune_cmd(args: argparse.Namespace) -> int:
    from .finetuning import finetune

    _setup_logging()
    result = finetune(args.train, args.images, init=args.init, val=args.val, val_images=args.val_images,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, name=args.name, out=args.out,
                      eval_every=args.eval_every, device=args.device, workers=args.workers,
                      progress=not args.no_progress)
    best = f", best val box AP {result.best_ap:.4f} (epoch {result.best_epoch})" if result.best_ap is not None else ""
    print(f"published {result.name}: {result.weights}{best}. Use it: zoo.load({result.name!r}), "
          f"zoo predict PHOTO --model {result.name}, zoo serve --model {result.name}")
    return 0


def publish_cmd(args: argparse.Namespace) -> int:
    from .publish import export_run

    _setup_logging()
    paths = export_run(args.run_dir, args.name, args.out, upload=args.upload, license=args.license)
    for key, value in paths.items():
        print(f"{key}: {value}")
    return 0


def recipes_cmd(args: argparse.Namespace) -> int:
    from .recipes import RECIPES

    for name, r in sorted(RECIPES.items()):
        print(f"{name:28s} {r.arch:20s} lr {r.lr:<7g} batch {r.batch_size:<3d} "
              f"{f'{r.max_epochs:g} epochs' if r.max_epochs else f'{r.max_iter} iters'}\n    source: {r.source}")
    return 0


def stats_cmd(args: argparse.Namespace) -> int:
    from .stats import stats_cmd as run

    _setup_logging()
    print(run(args.ann, args.images, args.map, as_json=args.json, plots=args.plots))
    return 0


def diagnose_cmd(args: argparse.Namespace) -> int:
    from .diagnose import diagnose_cmd as run

    _setup_logging()
    print(run(args.pred, args.ann, as_json=args.json, plots=args.plots, pictures=args.pictures, images=args.images,
              worst=args.worst, score_threshold=args.score_threshold))
    return 0


def plot_cmd(args: argparse.Namespace) -> int:
    from .plots import plot_runs

    print(f"wrote {plot_runs(args.run_dirs, args.out)}")
    return 0


def _add_training_commands(sub: Any) -> None:
    """``train`` and ``finetune``."""
    from zoo.cli_common import add_download_flags

    t = sub.add_parser("train", help="train or finetune with a recipe")
    t.add_argument("recipe")
    t.add_argument("overrides", nargs="*", help="recipe fields as key=value (e.g. train_ann=... lr=0.01)")
    t.add_argument("--init", help="zoo model name or .safetensors to start from ('none': from scratch)")
    t.add_argument("--head", choices=("transfer", "reinit"),
                   help="transfer the class head through the category mapping, or reinitialise it (backbone only)")
    t.add_argument("--out", help="run folder (default runs/<recipe>)")
    t.add_argument("--name", help="model name of the exported weights (default: the recipe name)")
    t.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    t.add_argument("--no-progress", action="store_true")
    add_download_flags(t)
    t.set_defaults(fn=train)
    f = sub.add_parser("finetune", help="finetune a zoo model on your COCO or VOC data in one command")
    f.add_argument("--train", required=True, help="COCO JSON, or a Pascal VOC folder")
    f.add_argument("--images", help="image folder of a COCO JSON")
    f.add_argument("--val", help="validation COCO JSON or VOC folder (evaluated every --eval-every epochs)")
    f.add_argument("--val-images", help="image folder of --val (default: --images)")
    f.add_argument("--init", help="starting model (default: yolox_nano_coco on a CPU, fpn_r50_obj365 on a GPU)")
    f.add_argument("--epochs", type=float, default=30)
    f.add_argument("--batch-size", type=int)
    f.add_argument("--lr", type=float)
    f.add_argument("--name", help="name to publish under: zoo.load(NAME) works afterwards")
    f.add_argument("--out", help="run folder (default runs/<name>)")
    f.add_argument("--eval-every", type=int, default=1, help="epochs between validations")
    f.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    f.add_argument("--workers", type=int, default=2, help="data loader processes")
    f.add_argument("--no-progress", action="store_true")
    add_download_flags(f)
    f.set_defaults(fn=finetune_cmd)


def _add_eval_command(sub: Any) -> None:
    from zoo.cli_common import add_download_flags

    from .evaluation.run import METRICS

    e = sub.add_parser("eval", help="a model's COCO AP, VOC AP, CityPersons MR^-2 or mIoU on a dataset")
    e.add_argument("model", help="zoo model name or .safetensors")
    e.add_argument("--metric", choices=METRICS, default="coco",
                   help="coco: --ann JSON --images DIR; voc / voc07 (11-point): --ann VOC20xx folder; citypersons: "
                        "--ann gtBboxCityPersons --images leftImg8bit; miou: --ann VOC2012 or ADEChallengeData2016")
    e.add_argument("--ann", required=True, help="annotation file or dataset folder (see --metric)")
    e.add_argument("--images", help="image folder (coco, citypersons)")
    e.add_argument("--split", help="dataset split (default: voc test, citypersons val, miou val / validation)")
    e.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a module first (e.g. one that registers a custom architecture); repeatable")
    e.add_argument("--device")
    e.add_argument("--batch-size", type=int, default=2)
    e.add_argument("--out", help="write the values as JSON (fractions; null where undefined)")
    add_download_flags(e)
    e.set_defaults(fn=evaluate)


def _add_run_commands(sub: Any) -> None:
    """``publish``, ``recipes`` and ``plot``."""
    p = sub.add_parser("publish", help="export a run: safetensors, spec, model card, optional upload")
    p.add_argument("run_dir")
    p.add_argument("name")
    p.add_argument("--out")
    p.add_argument("--upload", help="hf://org/repo/file.safetensors")
    p.add_argument("--license", default="Apache-2.0")
    p.set_defaults(fn=publish_cmd)
    r = sub.add_parser("recipes", help="list recipes and their sources")
    r.set_defaults(fn=recipes_cmd)
    pl = sub.add_parser("plot", help="loss and validation AP against iterations of one or more runs")
    pl.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    pl.add_argument("--out", required=True, help="PNG to write")
    pl.set_defaults(fn=plot_cmd)


def _add_analysis_commands(sub: Any) -> None:
    """``stats`` and ``diagnose``."""
    s = sub.add_parser("stats", help="dataset statistics of a COCO JSON (the Objects365 paper's Table 1, Fig. 7)")
    s.add_argument("ann", help="COCO-format annotation JSON")
    s.add_argument("--images", help="image folder: count the listed images missing there")
    s.add_argument("--map", action="append", default=[], choices=("coco", "voc"),
                   help="effective annotations under this label space; repeatable")
    s.add_argument("--json", action="store_true", help="print JSON instead of tables")
    s.add_argument("--plots", metavar="DIR", help="write PNG figures there")
    s.set_defaults(fn=stats_cmd)
    d = sub.add_parser("diagnose", help="error breakdown of detections (C75, C50, Loc, Sim, Oth, BG, FN)")
    d.add_argument("pred", help="COCO results JSON (image_id, category_id, bbox, score)")
    d.add_argument("ann", help="COCO-format annotation JSON (supercategory fields define Sim)")
    d.add_argument("--json", action="store_true", help="print JSON instead of tables")
    d.add_argument("--plots", metavar="DIR", help="write the stacked PR figures there")
    d.add_argument("--pictures", metavar="DIR", help="draw the images with the most errors there (matched ground "
                   "truth green, matched detections light blue, false negatives red, false positives blue), with a "
                   "contact sheet")
    d.add_argument("--images", metavar="IMGDIR", help="folder of the annotated images for --pictures (without it "
                   "the boxes are drawn on grey canvases)")
    d.add_argument("--worst", type=int, default=20, metavar="N", help="how many images --pictures draws (default 20)")
    d.add_argument("--score-threshold", type=float, default=0.3,
                   help="detections drawn and counted in --pictures score at least this (default 0.3)")
    d.set_defaults(fn=diagnose_cmd)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m training`` parser with every subcommand."""
    from zoo.cli_common import Parser

    from .data_commands import add_data_parser

    parser = Parser(prog="python -m training", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_training_commands(sub)
    _add_eval_command(sub)
    _add_run_commands(sub)
    _add_analysis_commands(sub)
    add_data_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from zoo.cli_common import run_cli, use_download_flags

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # recipe overrides may follow options: collect the key=value words argparse left over
    stray = [x for x in extra if x.startswith("-") or "=" not in x or args.command != "train"]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    use_download_flags(getattr(args, "mirror", None), getattr(args, "offline", None))
    return run_cli(f"python -m training {args.command}", lambda: args.fn(args), debug=getattr(args, "debug", False),
                   extra="training")
