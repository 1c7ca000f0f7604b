"""The engine on a tiny RetinaNet: DDP equivalence, exact resume after SIGKILL, NaN stop, and the end-to-end path
pretrain (Objects365-format) -> head transfer by name -> finetune (COCO-format) -> evaluate -> publish."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_training_tiny import ARCH, TESTS, make_coco_set

from training import checkpoint as ckpt
from training.data import CocoDetection
from training.distributed import Context, setup, teardown
from training.engine import NonFiniteLossError, Trainer, loss_of, seed_everything
from training.recipes import get_recipe
from training.transforms import detection_train

ROOT = TESTS.parent
O365_NAMES, O365_IDS = ["person", "car", "dog", "lamp"], [1, 56, 88, 200]
TINY = ["categories=none", f"arch={ARCH}", "imports=test_training_tiny", "num_workers=0", "amp=false",
        "min_sizes=96", "max_size=160", "warmup_iters=5", "log_period=1"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Two shared cores: OpenMP threads spinning against each other make these runs ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _recipe(**changes):
    base = get_recipe("coco_faster_rcnn_1x").override(TINY[:1] + TINY[3:])
    return dataclasses.replace(base, **changes)


def _dataset(ann, images):
    return CocoDetection(ann, images, transforms=detection_train((96,), 160, 0.5))


def _model(seed: int = 0):
    import zoo.models

    seed_everything(seed)
    return zoo.models.build(ARCH, len(O365_NAMES) + 1)


def _ddp_worker(rank: int, ann: str, images: str, out: str, port: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    ctx = setup("cpu")
    recipe = _recipe(max_iter=4, steps=(3,), ims_per_gpu=2, batch_size=4, lr=0.01, checkpoint_period=100)
    Trainer(_model(), _dataset(ann, images), recipe, out, ctx, progress=False).fit()
    teardown()


def test_two_process_ddp_matches_single_process(tmp_path):
    ann, images = make_coco_set(tmp_path / "data", O365_NAMES, O365_IDS, images=16)
    recipe = _recipe(max_iter=4, steps=(3,), ims_per_gpu=4, batch_size=4, lr=0.01, checkpoint_period=100)
    Trainer(_model(), _dataset(ann, images), recipe, tmp_path / "single", Context(0, 1, 0, torch.device("cpu")),
            progress=False).fit()
    mp.spawn(_ddp_worker, args=(str(ann), str(images), str(tmp_path / "ddp"), 29600 + os.getpid() % 1000),
             nprocs=2, join=True)
    single = ckpt.load(tmp_path / "single" / "last.pt")
    ddp = ckpt.load(tmp_path / "ddp" / "last.pt")
    assert single["iteration"] == ddp["iteration"] == 4 and ddp["world_size"] == 2
    start = _model().state_dict()
    moved = max(float((single["model"][k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-4  # training changed the weights, so the comparison below means something
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)


def _cli(args: list[str], **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=f"{TESTS}{os.pathsep}{ROOT}", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "training", "train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _kill_mid_period(args: list[str], run: Path, after: int) -> int:
    """Train in ``run`` and SIGKILL the process once it has logged an iteration >= ``after`` that is 2 past a
    checkpoint (period 4), so that the resumed run logs two or three iterations again; return the dead pid."""
    victim = _cli([*args, "--out", str(run)])
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        lines = metrics.read_text().splitlines() if metrics.is_file() else []
        try:
            last = json.loads(lines[-1])["iteration"] if lines else 0
        except ValueError:  # a line being written
            last = 0
        if last >= after and last % 4 == 2:
            break
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL
    return victim.pid


def test_sigkill_twice_then_resume_equals_uninterrupted_run_with_one_metrics_row_per_iteration(tmp_path):
    ann, images = make_coco_set(tmp_path / "data", O365_NAMES, O365_IDS, images=16)
    args = ["coco_faster_rcnn_1x", f"train_ann={ann}", f"train_images={images}", *TINY, "max_iter=60",
            "steps=40", "checkpoint_period=4", "ims_per_gpu=2", "batch_size=2", "lr=0.01", "--init", "none",
            "--no-progress"]
    full = _cli([*args, "--out", str(tmp_path / "full")])
    assert full.wait(timeout=120) == 0, full.stdout.read()

    run = tmp_path / "killed"
    _kill_mid_period(args, run, after=10)
    pid = _kill_mid_period(args, run, after=ckpt.load(run / "last.pt")["iteration"] + 10)
    killed_at = ckpt.load(run / "last.pt")["iteration"]
    assert 16 <= killed_at < 60
    debris = run / f".last.pt.{pid}.a1b2c3d4.tmp"  # what a SIGKILL in the middle of a checkpoint save leaves
    debris.write_bytes(b"half a checkpoint")
    resumed = _cli([*args, "--out", str(run)])
    out = resumed.communicate(timeout=120)[0]
    assert resumed.returncode == 0, out
    assert f"resumed from {run / 'last.pt'} at iteration {killed_at}" in out
    a, b = ckpt.load(tmp_path / "full" / "last.pt"), ckpt.load(run / "last.pt")
    assert a["iteration"] == b["iteration"] == 60
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert not debris.exists() and not list(run.glob(".*.tmp"))
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in logged] == list(range(1, 61))
    full_log = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [row["loss"] for row in logged] == [row["loss"] for row in full_log]
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,lr,loss,") and [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, 61))


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    ann, images = make_coco_set(tmp_path / "data", O365_NAMES, O365_IDS, images=8)
    recipe = _recipe(max_iter=50, steps=(), ims_per_gpu=2, batch_size=2, lr=1e6, warmup_iters=0,
                     checkpoint_period=1)
    trainer = Trainer(_model(), _dataset(ann, images), recipe, tmp_path / "run",
                      Context(0, 1, 0, torch.device("cpu")), progress=False)
    with pytest.raises(NonFiniteLossError, match="not finite at iteration .* Last good checkpoint: .*last.pt"):
        trainer.fit()
    state = ckpt.load(tmp_path / "run" / "last.pt")
    assert 1 <= state["iteration"] < 50
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_bit_flip_in_last_checkpoint_resumes_from_the_previous_one_with_a_warning(tmp_path, caplog):
    ann, images = make_coco_set(tmp_path / "data", O365_NAMES, O365_IDS, images=8)
    recipe = _recipe(max_iter=4, steps=(), ims_per_gpu=2, batch_size=2, lr=0.01, checkpoint_period=2)
    run, ctx = tmp_path / "run", Context(0, 1, 0, torch.device("cpu"))
    Trainer(_model(), _dataset(ann, images), recipe, run, ctx, progress=False).fit()
    assert ckpt.load(run / "last.pt")["iteration"] == 4 and ckpt.load(run / "last.previous.pt")["iteration"] == 2
    data = bytearray((run / "last.pt").read_bytes())
    weights = ckpt.load(run / "last.pt")["model"]["head.classification_head.cls_logits.weight"]
    data[data.index(weights.numpy().tobytes()[:64]) + 1] ^= 0x10  # one bit of one weight
    (run / "last.pt").write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING):
        trainer = Trainer(_model(), _dataset(ann, images), recipe, run, ctx, progress=False)
        assert trainer.fit()["iteration"] == 4
    assert f"{run / 'last.pt'}: content sha256" in caplog.text
    assert f"resuming from the previous checkpoint {run / 'last.previous.pt'}" in caplog.text
    assert ckpt.load(run / "last.pt")["iteration"] == 4
    logged = [json.loads(line)["iteration"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]


def test_pretrain_transfer_finetune_evaluate_publish(tmp_path):
    import zoo
    from training.cli import main
    from training.publish import export_run

    o365_ann, o365_images = make_coco_set(tmp_path / "o365", O365_NAMES, O365_IDS, images=24, seed=1)
    common = [*TINY, "ims_per_gpu=4", "batch_size=4", "lr=0.1", "clip_grad=10", "--no-progress", "--init", "none"]
    assert main(["train", "o365_retinanet_1350k", f"train_ann={o365_ann}", f"train_images={o365_images}",
                 *common, "max_iter=150", "steps=120", "checkpoint_period=1000", "sync_bn=false",
                 "--out", str(tmp_path / "pre"), "--name", "tiny_o365"]) == 0
    pretrained = tmp_path / "pre" / "tiny_o365.safetensors"

    # COCO-format target: other ids, other order, and no 'lamp'
    coco_names = ["car", "dog", "person"]
    coco_ann, coco_images = make_coco_set(tmp_path / "coco", coco_names, [3, 18, 1], images=12, seed=2)
    dataset = CocoDetection(coco_ann, coco_images)
    mapped = zoo.load(str(pretrained), categories=coco_names, head="transfer", progress=False)
    reinit = zoo.load(str(pretrained), categories=coco_names, head="reinit", progress=False)
    torch.manual_seed(0)
    loss_mapped = loss_of(mapped, dataset, list(range(8)))
    loss_reinit = loss_of(reinit, dataset, list(range(8)))
    assert loss_mapped < loss_reinit - 0.1, (loss_mapped, loss_reinit)  # the box-regression part is shared

    finetune = tmp_path / "ft"
    assert main(["train", "coco_faster_rcnn_1x", f"train_ann={coco_ann}", f"train_images={coco_images}",
                 f"val_ann={coco_ann}", f"val_images={coco_images}", *common[:-2], "--init", str(pretrained),
                 "lr=0.05", "max_iter=10", "steps=8", "checkpoint_period=1000", "--out", str(finetune),
                 "--name", "tiny_coco"]) == 0
    evaluation = json.loads((finetune / "eval.json").read_text())
    assert 0.0 < evaluation["stats"]["AP50"] <= 1.0

    paths = export_run(finetune, "tiny_coco_pub", tmp_path / "pub")
    spec = json.loads(Path(paths["spec_json"]).read_text())
    assert spec["arch"] == ARCH and spec["metrics"][0]["name"] == "box AP"
    assert "register(ModelSpec(" in Path(paths["spec_py"]).read_text()
    assert "tiny_coco_pub" in Path(paths["card"]).read_text()
    model = zoo.load(str(paths["weights"]), progress=False)
    assert model.categories == ("person", "car", "dog")  # category-id order of the COCO-format file
