"""Record MMDetection 3.3.0's outputs for the zoo's compat="mmdet" models (tests/fixtures/mmdet/).

    python scripts/mmdet_reference/run.py [--venv DIR] [--work DIR] [--install-torch] [--threads N]

1. Environment: DIR (default ~/.cache/objects365-zoo/mmdet-3.3.0) becomes a venv with mmdet==3.3.0, mmengine,
   mmcv-lite==2.1.0, scikit-image, matplotlib and this repository (editable). Torch and torchvision are those of the
   interpreter running this script (a .pth file points at its site-packages, so both sides compute with the same
   torch), or come from the package index with ``--install-torch``. The script then runs itself inside that venv.
2. mmcv-lite has no compiled ops: :mod:`standin_ops` puts torchvision's ``nms`` and ``roi_align`` in place of mmcv's
   (``aligned`` and ``sampling_ratio`` passed through), the only two the models run at inference.
3. Weights: the Objects365 v1 Faster R-CNN and RetinaNet R50-FPN are built from MMDetection's own configs and given
   seeded random weights (:func:`common.generate_state_dict`): He-normal, with the backbone's BatchNorm statistics
   calibrated on the five photos (stored as float16), the pyramid levels scaled up with their stride (``LEVEL_GAIN``)
   and the heads so that their outputs spread without saturating on any photo (``*_TARGETS``). The real
   MMDetection checkpoints go to --work; the fixtures keep the recipe, the statistics and the state-dict digest.
4. Outputs, per model and photo, with MMDetection's ``inference_detector``: from the shared input
   (:func:`common.nearest_resize` to MMDetection's size, so that both sides' resize is a copy) the RPN proposals and
   scores (Faster R-CNN) and the final boxes, scores and labels; from MMDetection's own preprocessing the resized
   size, the resized uint8 image at :func:`common.sample_positions` and the final detections. With this repository
   importable, the full-image difference between its ``MMDetTransform`` and MMDetection's resize is measured too.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_VENV = Path.home() / ".cache" / "objects365-zoo" / "mmdet-3.3.0"
DEFAULT_WORK = Path.home() / ".cache" / "objects365-zoo" / "mmdet-reference"
PACKAGES = ["mmdet==3.3.0", "mmengine", "mmcv-lite==2.1.0", "scikit-image", "matplotlib"]
SEED = 17
# Pyramid outputs: std 1.5 ** level (finest 0) on the photos, so that the coarse levels, with few anchors, still
# win places among the proposals and detections (and anchors there are tested).
LEVEL_GAIN = 1.5
# Head layers: (largest |output - bias| on the photos, bias offset, bias scale). Random features are heavy-tailed and
# their scale varies threefold between photos, so the peak (not the std) is set: logits that saturate the sigmoid or
# softmax tie in float32 and make NMS order arbitrary; large deltas make boxes hundreds of pixels wide, where float
# rounding noise between the two implementations (magnified by the random backbone) passes 0.01 px, and
# below -log(1000 / 16) only MMDetection clamps them. Biases keep the weakest photo above the 0.05 score threshold:
# RetinaNet's offset, random class biases for the RoI head's softmax.
RPN_TARGETS = {"rpn_head.rpn_cls": (6.0, 0.0, 0.0), "rpn_head.rpn_reg": (1.0, 0.0, 0.0)}
ROI_TARGETS = {"roi_head.bbox_head.fc_cls": (10.0, 0.0, 2.0), "roi_head.bbox_head.fc_reg": (1.0, 0.0, 0.0)}
RETINA_TARGETS = {"bbox_head.retina_cls": (6.0, -3.4, 0.0), "bbox_head.retina_reg": (1.0, 0.0, 0.0)}


def venv_python(path: Path) -> Path:
    return path / "bin" / "python"


def ensure_venv(path: Path, install_torch: bool = False) -> Path:
    """The MMDetection venv at ``path``, created and filled on first use; returns its Python."""
    python = venv_python(path)
    if (path / ".ready").is_file():
        return python
    venv.create(path, with_pip=True)
    if not install_torch:
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        Path(purelib, "zoo-torch.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    extra = ["torch", "torchvision"] if install_torch else []
    subprocess.run([str(python), "-m", "pip", "install", *extra, *PACKAGES, "-e", str(REPO)], check=True)
    (path / ".ready").write_text("")
    return python


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="where the checkpoints are written")
    parser.add_argument("--install-torch", action="store_true", help="install torch in the venv instead of sharing")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the tests replay on one)")
    args = parser.parse_args()
    if Path(sys.prefix).resolve() != args.venv.resolve():
        python = ensure_venv(args.venv, args.install_torch)
        return subprocess.run([str(python), __file__, *sys.argv[1:]], check=False).returncode
    record(args.work, args.threads)
    return 0


def _calibration_steps(recipes: dict[str, dict[str, Any]], frcnn_name: str, retina_name: str
                       ) -> list[tuple[str, dict[str, Any], str]]:
    """The rescaling passes in order, ``(detector, targets, measure)``: each detector's FPN levels, then the heads."""
    steps: list[tuple[str, dict[str, Any], str]] = []
    for name in (frcnn_name, retina_name):
        levels = [k.rsplit(".", 1)[0] for k in recipes[name]
                  if k.startswith("neck.fpn_convs.") and k.endswith("weight")]
        pyramid = {layer: (LEVEL_GAIN ** i, 0.0, 0.0) for i, layer in enumerate(levels)}
        steps += [(name, pyramid, "std")] * 2  # twice: RetinaNet's P7 is fed by P6
    return [*steps, (frcnn_name, RPN_TARGETS, "peak"), (frcnn_name, ROI_TARGETS, "peak"),
            (retina_name, RETINA_TARGETS, "peak")]


def record(work: Path, threads: int) -> None:
    import torch

    sys.path.insert(0, str(HERE))
    import common
    import standin_ops

    standin_ops.install()
    import cv2
    import mmcv
    import mmdet
    import mmengine
    from mmdet.datasets import Objects365V1Dataset

    torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    photos = common.photos()
    classes = list(Objects365V1Dataset.METAINFO["classes"])
    config_dir = Path(mmdet.__file__).parent / ".mim" / "configs" / "objects365"
    detectors = {name: build_detector(config_dir / config) for name, config in common.MODELS.items()}
    sizes = {}
    for name, photo in photos.items():
        data = test_pipeline(next(iter(detectors.values())))(dict(img=photo[:, :, ::-1].copy(), img_id=0))
        sizes[name] = tuple(int(s) for s in data["data_samples"].metainfo["img_shape"])
    shared = {name: common.nearest_resize(photo, sizes[name]) for name, photo in photos.items()}

    frcnn_name, retina_name = common.MODELS
    recipes = {name: common.default_recipe({k: tuple(v.shape) for k, v in det.state_dict().items()})
               for name, det in detectors.items()}
    stats: dict[str, np.ndarray] = {}
    load(detectors[frcnn_name], recipes[frcnn_name], stats)
    stats = calibrate_backbone(detectors[frcnn_name], list(shared.values()))
    for name, targets, measure in _calibration_steps(recipes, frcnn_name, retina_name):
        load(detectors[name], recipes[name], stats)
        rescale(detectors[name], recipes[name], targets, list(shared.values()), measure)

    outputs: dict[str, np.ndarray] = {}
    models_out = {}
    for name, det in detectors.items():
        state = load(det, recipes[name], stats)
        common.save_checkpoint(state, classes, work / f"{name}.pth")
        models_out[name] = {"config": common.MODELS[name], "digest": common.state_digest(state),
                            "recipe": recipes[name]}
        for photo_name, photo in photos.items():
            key = f"{name}/{photo_name}"
            det_out, proposals = infer(det, shared[photo_name])
            outputs.update({f"{key}/shared/{k}": v for k, v in det_out.items()})
            if proposals is not None:
                outputs.update({f"{key}/shared/proposal_{k}": v for k, v in proposals.items()})
            det_out, _ = infer(det, photo)
            outputs.update({f"{key}/own/{k}": v for k, v in det_out.items()})
            print(f"{key}: {len(det_out['scores'])} detections", flush=True)
    for photo_name, photo in photos.items():
        data = test_pipeline(detectors[frcnn_name])(dict(img=photo[:, :, ::-1].copy(), img_id=0))
        resized = data["inputs"].numpy()[::-1].transpose(1, 2, 0)  # CHW BGR -> HWC RGB
        rows, cols = common.sample_positions(sizes[photo_name])
        outputs[f"{photo_name}/size"] = np.array(sizes[photo_name], dtype=np.int32)
        outputs[f"{photo_name}/samples"] = np.ascontiguousarray(resized[rows, cols])

    common.FIXTURES.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(common.BN_STATS_FILE, **stats)
    np.savez_compressed(common.OUTPUTS_FILE, **outputs)
    common.RECIPE_FILE.write_text(json.dumps({
        "seed": SEED,
        "versions": {"mmdet": mmdet.__version__, "mmengine": mmengine.__version__, "mmcv": mmcv.__version__,
                     "torch": torch.__version__, "opencv": cv2.__version__, "numpy": np.__version__},
        "photos": {name: common.array_digest(photo) for name, photo in photos.items()},
        "classes": classes,
        "resize_difference": resize_difference(photos, sizes),
        "models": models_out,
    }, separators=(",", ":")) + "\n")
    print(f"wrote {common.FIXTURES}; checkpoints in {work}")


def build_detector(config: Path):
    from mmdet.apis import init_detector

    return init_detector(str(config), None, device="cpu").eval()


def test_pipeline(detector):
    from mmcv.transforms import Compose
    from mmdet.utils import get_test_pipeline_cfg

    cfg = get_test_pipeline_cfg(detector.cfg.copy())
    cfg[0].type = "mmdet.LoadImageFromNDArray"
    return Compose(cfg)


def load(detector, recipe: dict, stats: dict[str, np.ndarray]) -> dict:
    import common

    state = common.generate_state_dict(recipe, SEED, stats)
    detector.load_state_dict(state, strict=True)
    return state


def normalised(detector, image: np.ndarray):
    """The data preprocessor's input for an RGB uint8 image already at its size."""
    import torch
    from mmdet.structures import DetDataSample

    sample = DetDataSample(metainfo={"img_shape": image.shape[:2], "ori_shape": image.shape[:2],
                                     "scale_factor": (1.0, 1.0)})
    chw = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1)))
    data = detector.data_preprocessor({"inputs": [chw], "data_samples": [sample]}, False)
    return data["inputs"], data["data_samples"]


def calibrate_backbone(detector, images: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Backbone BatchNorm statistics as cumulative averages over the images (float16)."""
    import torch
    from torch import nn

    norms = {f"backbone.{n}": m for n, m in detector.backbone.named_modules() if isinstance(m, nn.BatchNorm2d)}
    for m in norms.values():
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for image in images:
            detector.backbone(normalised(detector, image)[0])
    detector.eval()
    stats = {}
    for name, m in norms.items():
        for leaf in ("running_mean", "running_var"):
            value = getattr(m, leaf).numpy().astype(np.float16)
            assert np.isfinite(value).all(), f"{name}.{leaf} overflows float16"
            stats[f"{name}.{leaf}"] = value
    return stats


def rescale(detector, recipe: dict, targets: dict[str, tuple[float, float, float]], images: list[np.ndarray],
            measure: str) -> None:
    """Scale each layer's weights so that its outputs on the images (biases still zero) have the target ``measure``
    ("std" or "peak", the largest absolute value), then give its bias the target offset and scale."""
    import torch

    seen: dict[str, list] = {name: [] for name in targets}
    hooks = [detector.get_submodule(name).register_forward_hook(
        lambda mod, inp, out, name=name: seen[name].append(out.flatten())) for name in targets]
    with torch.no_grad():
        for image in images:
            inputs, samples = normalised(detector, image)
            detector.predict(inputs, samples)
    for h in hooks:
        h.remove()
    for name, (target, offset, scale) in targets.items():
        values = torch.cat(seen[name])
        recipe[f"{name}.weight"]["scale"] *= target / float(values.std() if measure == "std" else values.abs().max())
        recipe[f"{name}.bias"].update(offset=offset, scale=scale)


def infer(detector, image: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """MMDetection's ``inference_detector`` on an RGB photo: final detections and (two-stage) RPN proposals."""
    from mmdet.apis import inference_detector

    proposals = []
    rpn = getattr(detector, "rpn_head", None)
    if rpn is not None:
        predict = rpn.predict
        rpn.predict = lambda *a, **k: proposals.append(predict(*a, **k)) or proposals[-1]
    try:
        result = inference_detector(detector, image[:, :, ::-1].copy()).pred_instances
    finally:
        if rpn is not None:
            del rpn.predict
    out = {"boxes": result.bboxes.numpy().astype(np.float32), "scores": result.scores.numpy().astype(np.float32),
           "labels": result.labels.numpy().astype(np.int16)}
    if not proposals:
        return out, None
    p = proposals[0][0]
    return out, {"boxes": p.bboxes.numpy().astype(np.float32), "scores": p.scores.numpy().astype(np.float32)}


def resize_difference(photos: dict[str, np.ndarray], sizes: dict[str, tuple[int, int]]) -> dict | None:
    """Whole-image difference, in grey levels, between OpenCV's resize (MMDetection's) and the zoo's
    ``MMDetTransform`` (None when this repository is not importable here)."""
    import cv2
    import torch

    try:
        from zoo.models.faster_rcnn import MMDetTransform
        from zoo.preprocess import DETECTION_800
    except ImportError:
        return None
    transform = MMDetTransform(**DETECTION_800.transform_kwargs()).eval()
    mean = np.array(DETECTION_800.mean) * 255
    std = np.array(DETECTION_800.std) * 255
    result = {}
    for name, photo in photos.items():
        size = sizes[name]
        theirs = cv2.resize(photo, (size[1], size[0]), interpolation=cv2.INTER_LINEAR).astype(np.float64)
        image = torch.from_numpy(photo.transpose(2, 0, 1).copy()).float() / 255
        ours, _ = transform.resize(transform.normalize(image))
        ours = ours.double().numpy().transpose(1, 2, 0) * std + mean
        diff = np.abs(ours - theirs)
        result[name] = {"size": list(ours.shape[:2]), "mean": round(float(diff.mean()), 4),
                        "max": round(float(diff.max()), 4), "differ": round(float((diff > 0.5).mean()), 4)}
    return result


if __name__ == "__main__":
    sys.exit(main())
