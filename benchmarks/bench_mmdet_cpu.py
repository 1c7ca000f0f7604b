"""Seconds per image on this machine's CPU: MMDetection 3.3.0 against the zoo's compat="mmdet" conversion of the same
checkpoint (Objects365 v1 Faster R-CNN and RetinaNet R50-FPN), each from an in-memory uint8 photo through its own
preprocessing to final detections, median over repeats per photo after a warm-up, on the five reference photos.

MMDetection runs as ``inference_detector`` with the stand-in ops of ``scripts/mmdet_reference`` (torchvision's NMS
and RoIAlign); the zoo model is the checkpoint through ``convert_file`` and ``zoo.load``, called as ``model([image])``.
The checkpoints are the reference run's (seeded random weights, rebuilt from tests/fixtures/mmdet/). Both sides run
in the MMDetection venv of ``scripts/mmdet_reference/run.py`` (the script re-runs itself there), with the same torch.

    nice python benchmarks/bench_mmdet_cpu.py [--repeats 3] [--threads 1] [--venv DIR]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "scripts" / "mmdet_reference"))

import run as reference  # noqa: E402
from _common import median_time, report  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per photo and side")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--venv", type=Path, default=reference.DEFAULT_VENV)
    args = parser.parse_args()
    if Path(sys.prefix).resolve() != args.venv.resolve():
        python = reference.ensure_venv(args.venv)
        return subprocess.run([str(python), __file__, *sys.argv[1:]], check=False).returncode

    import common
    import numpy as np
    import standin_ops
    import torch

    standin_ops.install()
    import mmdet
    from mmdet.apis import inference_detector

    import zoo
    from zoo.convert import convert_file

    torch.set_num_threads(args.threads)
    recipe, stats, _ = common.load_reference()
    photos = common.photos()
    config_dir = Path(mmdet.__file__).parent / ".mim" / "configs" / "objects365"
    rows, per_photo = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in common.MODELS.items():
            state = common.reference_state_dict(recipe, stats, name)
            src = common.save_checkpoint(state, recipe["classes"], Path(tmp) / f"{name}.pth")
            ours = zoo.load(str(convert_file(src, Path(tmp) / f"{name}.safetensors", zoo.get_spec(name))))
            theirs = reference.build_detector(config_dir / config)
            theirs.load_state_dict(state, strict=True)
            times: dict[str, list[float]] = {"mmdet": [], "zoo": []}
            for photo_name, photo in photos.items():
                bgr = np.ascontiguousarray(photo[:, :, ::-1])
                with torch.inference_mode():
                    t_mm, _ = median_time(lambda m=theirs, b=bgr: inference_detector(m, b), args.repeats)
                    t_zoo, _ = median_time(
                        lambda m=ours, p=photo: m([torch.from_numpy(p).permute(2, 0, 1).float().div(255)]),
                        args.repeats)
                times["mmdet"].append(t_mm)
                times["zoo"].append(t_zoo)
                per_photo[f"{name}/{photo_name}"] = {"mmdet_s": round(t_mm, 3), "zoo_s": round(t_zoo, 3)}
            mm, ours_s = statistics.mean(times["mmdet"]), statistics.mean(times["zoo"])
            rows.append([name, args.threads, round(mm, 3), round(ours_s, 3), round(ours_s / mm, 3)])
            del ours, theirs
    report("bench_mmdet_cpu", ["model", "threads", "mmdet_s_per_image", "zoo_s_per_image", "zoo_over_mmdet"], rows,
           {"per_photo": per_photo, "repeats": args.repeats, "torch": torch.__version__, "mmdet": mmdet.__version__})
    return 0


if __name__ == "__main__":
    sys.exit(main())
