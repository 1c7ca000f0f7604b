"""The fastest path per device: time an export's runtimes and precisions on this machine and pick the fastest one
whose accuracy passes (``python -m export NAME --precision auto``).

Candidates: the fp32 ``model.onnx`` on ONNX Runtime and on OpenVINO in f32 and (native bfloat16 CPUs) bf16, and
the int8 export (:mod:`export.quantize`) on both runtimes. Each is compared with fp32 on ONNX Runtime (agreement on
the calibration photos, AP on the labelled set when there is one) and passes when its AP drop is within
``max_ap_drop``; an int8 export beyond it is refused and not timed. ``OUT/fp32`` and ``OUT/int8`` are the export
folders, ``OUT/choice.json`` the choice and its figures.
"""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np

from zoo.letterbox import letterbox

from .artifact import ExportError, input_size, pad_value, read_metadata, staged_dir, write_json
from .quantize import (
    QuantizationError,
    accuracy_report,
    calibration_photos,
    fp32_reference,
    labelled_set,
    quantize_export,
    summary,
)
from .runtime import OnnxRunner, OpenVinoRunner, Runner, bf16_supported

CHOICE_FILE = "choice.json"
Key = TypeVar("Key", bound=Hashable)


def time_runners(runners: Mapping[Key, Runner], images: np.ndarray, rounds: int = 3,
                 repeats: int = 5) -> dict[Key, float]:
    """Images per second of each runner on ``images``, side by side: in each of ``rounds`` rounds every runner makes
    one warm-up call and ``repeats`` timed calls; the median call over all rounds."""
    times: dict[Key, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            run(images)
            for _ in range(repeats):
                start = time.perf_counter()
                run(images)
                times[name].append(time.perf_counter() - start)
    return {name: len(images) / statistics.median(values) for name, values in times.items()}


def candidates(fp32: Path, int8: Path | None, threads: int) -> dict[tuple[str, str], Runner]:
    """Runners by ``(runtime, precision)`` for the fp32 model file and (when it exists) the int8 one."""
    runners: dict[tuple[str, str], Runner] = {("onnxruntime", "fp32"): OnnxRunner(fp32, threads),
                                              ("openvino", "fp32"): OpenVinoRunner(fp32, "f32", threads)}
    if bf16_supported():
        runners["openvino", "bf16"] = OpenVinoRunner(fp32, "bf16", threads)
    if int8 is not None:
        runners["onnxruntime", "int8"] = OnnxRunner(int8, threads)
        runners["openvino", "int8"] = OpenVinoRunner(int8, "f32", threads)
    return runners


def serve_flags(runtime: str, precision: str, folder: Path) -> str:
    """The ``zoo serve`` flags that run a choice."""
    return f"--backend {runtime} --onnx {folder}" + (" --precision bf16" if precision == "bf16" else "")


def choose_fastest(model: str | Path, out_dir: str | Path, *, image_size: tuple[int, int] | None = None,
                   pretrained: bool = True, score_threshold: float | None = None, parity: bool = True,
                   overwrite: bool = False, batch: int = 1, threads: int | None = None, max_ap_drop: float = 1.0,
                   calibration: str | Path | None = None, eval_ann: str | Path | None = None,
                   eval_images: str | Path | None = None, method: str = "nncf") -> dict:
    """Export ``model`` in fp32 and int8 into ``out_dir``, time every candidate at ``batch`` images per call and
    write ``choice.json``: the fastest candidate whose accuracy passes, with every candidate's figures."""
    from .api import export_model

    threads = threads or os.cpu_count() or 1
    out = Path(out_dir)
    with staged_dir(out, overwrite=overwrite) as tmp:
        fp32, _ = export_model(model, tmp / "fp32", fmt="onnx", image_size=image_size, pretrained=pretrained,
                               score_threshold=score_threshold, parity=parity)
        meta = read_metadata(fp32.parent)
        size = input_size(meta)
        photos = calibration_photos(calibration, meta["model"], size)
        labelled = labelled_set(meta, eval_ann, eval_images)
        try:
            int8, int8_report = quantize_export(fp32.parent, tmp / "int8", calibration=calibration,
                                                eval_ann=eval_ann, eval_images=eval_images, max_ap_drop=max_ap_drop,
                                                method=method)
        except QuantizationError as exc:
            int8, int8_report = None, {"refused": str(exc)}
        runners = candidates(fp32, int8, threads)
        reference = fp32_reference(runners["onnxruntime", "fp32"], meta, photos, labelled)
        accuracy = {("onnxruntime", "int8"): int8_report} | {
            key: accuracy_report(reference, run, meta, photos, labelled, name=key[1])
            for key, run in runners.items() if key not in {("onnxruntime", "fp32"), ("onnxruntime", "int8")}}
        pad = pad_value(meta)
        images = np.stack([letterbox(p, size, pad)[0] for p in list(photos.values())[:batch]])
        if len(images) < batch:
            raise ExportError(f"--batch {batch} needs as many calibration photos; there are {len(images)}")
        rates = time_runners(runners, images)
        rows = []
        for (runtime, precision), rate in rates.items():
            drop = accuracy.get((runtime, precision), {}).get("ap", {}).get("ap_drop_points")
            rows.append({"runtime": runtime, "precision": precision, "images_per_s": rate, "ap_drop_points": drop,
                         "passed": drop is None or drop <= max_ap_drop,
                         "folder": "int8" if precision == "int8" else "fp32"})
        best = max((row for row in rows if row["passed"]), key=lambda row: row["images_per_s"])
        choice = {"model": meta["model"], "size": list(size), "batch": batch, "threads": threads,
                  "max_ap_drop": max_ap_drop, "load_average": list(os.getloadavg()),
                  "choice": {**best, "serve": serve_flags(best["runtime"], best["precision"], out / best["folder"])},
                  "candidates": rows, "accuracy": {f"{runtime} {precision}": summary(r) if "agreement" in r
                                                   else r["refused"] for (runtime, precision), r in accuracy.items()}}
        write_json(tmp / CHOICE_FILE, choice)
    return choice
