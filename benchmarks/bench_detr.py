"""Images per second of the smallest model of each DETR family in the zoo (D-FINE-S, RT-DETR-R18vd, LW-DETR-tiny) at
their native 640 x 640 on this machine's CPU: eager PyTorch (transformers' classes behind the zoo call) vs ONNX
Runtime vs OpenVINO (f32), batch 1, median over repeats after a warm-up.

The weights are random (seeded), built from the real configurations: the Hub's config.json files cannot be fetched
here, so each architecture is set up as transformers' conversion scripts set up the published checkpoints
(``get_d_fine_config("dfine_s_obj365")`` in convert_d_fine_original_pytorch_checkpoint_to_hf.py,
``get_rt_detr_config("rtdetr_r18vd")`` in convert_rt_detr_original_pytorch_checkpoint_to_hf.py, the "tiny" entries of
convert_lw_detr_to_hf.py). Speed does not depend on the weights' values. Every runtime gets the same input: sample
photos letterboxed by ``zoo.letterbox`` (what the service sends); the exports come from ``export.export_model`` and
their parity against eager is recorded (the random weights are perturbed so that the encoder's query scorer, which
transformers initialises to zero, does not tie every anchor; parity is reported, not required).

    nice python benchmarks/bench_detr.py [--repeats 10] [--threads 2] [--models dfine_s rtdetr_r18vd lwdetr_tiny]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median_time, report  # noqa: E402

import zoo  # noqa: E402
from export import export_model  # noqa: E402
from export.api import runner_for  # noqa: E402
from export.contract import output_names  # noqa: E402
from export.parity import sample_photos  # noqa: E402
from zoo.categories import get_categories  # noqa: E402
from zoo.letterbox import letterbox  # noqa: E402
from zoo.models.hf_detr import build_hf_detr  # noqa: E402
from zoo.registry import get_spec  # noqa: E402

SIDE = 640
# The processors of the published checkpoints: 640 x 640, rescale to [0, 1], no normalisation.
PROCESSOR = {"do_resize": True, "size": {"height": SIDE, "width": SIDE}, "do_rescale": True,
             "rescale_factor": 1 / 255, "do_normalize": False}


def dfine_s() -> dict:
    from transformers import DFineConfig

    config = DFineConfig(num_labels=366, hidden_expansion=0.5, depth_mult=0.34, decoder_layers=3,
                         decoder_n_points=[3, 6, 3], encoder_in_channels=[256, 512, 1024])
    backbone = config.backbone_config
    for key, value in {
        "hidden_sizes": [128, 256, 512, 1024], "stem_channels": [3, 16, 16], "stage_in_channels": [16, 64, 256, 512],
        "stage_mid_channels": [16, 32, 64, 128], "stage_out_channels": [64, 256, 512, 1024],
        "stage_num_blocks": [1, 1, 2, 1], "stage_downsample": [False, True, True, True],
        "stage_light_block": [False, False, True, True], "stage_kernel_size": [3, 3, 5, 5],
        "stage_numb_of_layers": [3, 3, 3, 3], "use_learnable_affine_block": True,
    }.items():
        setattr(backbone, key, value)
    return config.to_dict()


def rtdetr_r18vd() -> dict:
    from transformers import RTDetrConfig

    config = RTDetrConfig(num_labels=80, encoder_in_channels=[128, 256, 512], hidden_expansion=0.5, decoder_layers=3)
    config.backbone_config.hidden_sizes = [64, 128, 256, 512]
    config.backbone_config.depths = [2, 2, 2, 2]
    config.backbone_config.layer_type = "basic"
    return config.to_dict()


def lwdetr_tiny() -> dict:
    from transformers import LwDetrConfig, LwDetrViTConfig

    backbone = LwDetrViTConfig(image_size=1024, hidden_size=192, num_hidden_layers=6, num_attention_heads=12,
                               window_block_indices=[0, 2, 4], out_indices=[1, 3, 5])
    return LwDetrConfig(backbone_config=backbone, num_labels=366, projector_scale_factors=[1.0], num_queries=100,
                        decoder_layers=3, decoder_self_attention_heads=8, decoder_cross_attention_heads=16,
                        decoder_n_points=2, d_model=256).to_dict()


# bench name -> (config, registry entry whose spec the model carries, unused first class)
MODELS = {
    "dfine_s": (dfine_s, "dfine_s_obj365", True),
    "rtdetr_r18vd": (rtdetr_r18vd, "rtdetr_r18vd_coco_o365", False),
    "lwdetr_tiny": (lwdetr_tiny, "lwdetr_tiny_30e_objects365", True),
}


def build(name: str) -> torch.nn.Module:
    """The zoo model of ``name`` with seeded random weights, carrying its registry entry's spec."""
    make_config, entry, unused_first = MODELS[name]
    spec = get_spec(entry)
    config = make_config()
    names = get_categories(spec.categories)
    config["id2label"] = {str(i): n for i, n in enumerate((("unused",) if unused_first else ()) + names)}
    torch.manual_seed(0)
    model = build_hf_detr(len(names) + 1, spec.preprocessing, config=config, processor=PROCESSOR).eval()
    with torch.no_grad():  # transformers zero-initialises the query scorer: every anchor would tie and the
        for param in model.parameters():  # top-k query choice (and so parity) would be arbitrary
            param.add_(torch.randn_like(param) * 0.02)
    return zoo.describe(model, dataclasses.replace(spec, source=None, sha256=None), names)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per runtime")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    photos = sample_photos()
    canvases = [letterbox(p, (SIDE, SIDE), 0.0)[0] for p in photos.values()]
    rows, parity, load = [], {}, {"start": os.getloadavg()[0]}
    for name in args.models:
        model = build(name)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {params / 1e6:.1f}M parameters", flush=True)
        tensors = [torch.from_numpy(canvases[0])]
        stacked = np.stack(canvases[:1])
        with tempfile.TemporaryDirectory() as tmp:
            path, check = export_model(model, Path(tmp) / "onnx", photos=photos, raise_on_failure=False,
                                       image_size=(SIDE, SIDE))
            parity[name] = None if check is None else {"passed": check.passed, "images": check.images}
            onnx_file = path if path is not None else None
            if onnx_file is None:  # parity failed: the graph is still timed, from an export without the check
                onnx_file, _ = export_model(model, Path(tmp) / "onnx-unchecked", parity=False,
                                            image_size=(SIDE, SIDE))
            runners = {runtime: runner_for("onnx", onnx_file, output_names("detection"), runtime=runtime,
                                           threads=args.threads) for runtime in ("onnxruntime", "openvino")}

            def eager() -> None:
                with torch.inference_mode():
                    model(tensors)

            calls = {"eager": eager, **{k: (lambda r=r: r(stacked)) for k, r in runners.items()}}
            for runtime, call in calls.items():
                seconds, _ = median_time(call, args.repeats, warmup=2)
                rows.append((name, round(params / 1e6, 2), runtime, round(seconds * 1000, 1), round(1 / seconds, 2)))
                print(f"  {runtime}: {1 / seconds:.2f} images/s", flush=True)
    load["end"] = os.getloadavg()[0]
    report("bench_detr", ("model", "params_M", "runtime", "ms_per_image", "images_per_s"), rows,
           {"input": [SIDE, SIDE], "batch": 1, "threads": args.threads, "repeats": args.repeats,
            "weights": "random (seeded) in the published configurations; speed does not depend on them",
            "parity": parity, "load_average_1min": load, "cpus": os.cpu_count()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
