"""Safe reading, atomic writing and integrity of weights, training checkpoints and the converted-weights cache."""
from __future__ import annotations

import logging
import os
import signal
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from training import checkpoint as ckpt
from zoo.api import _converted
from zoo.atomic import remove_stale
from zoo.checkpoint import UnsafeCheckpointError, load_foreign, load_weights, save_weights
from zoo.convert import CONVERTERS
from zoo.hub import sha256_file

ROOT = Path(__file__).resolve().parent.parent


class Evil:
    def __reduce__(self):
        return (print, ("this would run at load time",))


def test_foreign_checkpoint_with_numpy_scalars_in_meta_loads(tmp_path):
    path = tmp_path / "mm.pth"
    torch.save({"meta": {"seed": np.int64(3), "lr": np.float32(0.02), "CLASSES": ("a", "b")},
                "state_dict": {"w": torch.ones(2)}}, path)
    data = load_foreign(path)
    assert data["meta"]["seed"] == 3 and torch.equal(data["state_dict"]["w"], torch.ones(2))


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"meta": {"hook": Evil()}, "state_dict": {}}, path)
    with pytest.raises(UnsafeCheckpointError, match="refused to load"):
        load_foreign(path)


def test_save_weights_roundtrip_with_metadata(tmp_path):
    path = save_weights({"w": torch.arange(4.0)}, tmp_path / "m.safetensors", {"arch": "x", "categories": ["a"]})
    state, meta = load_weights(path)
    assert torch.equal(state["w"], torch.arange(4.0))
    assert meta == {"format": "objects365-zoo/1", "arch": "x", "categories": '["a"]'}


def _killed_mid_write(target: Path) -> int:
    """SIGKILL a process while it writes ``target`` through zoo.atomic (half the bytes out); return its pid."""
    code = ("import sys, time; from zoo.atomic import atomic_write\n"
            "with atomic_write(sys.argv[1]) as f:\n"
            "    f.write(b'half a file'); f.flush(); print('writing', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(target)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert child.stdout.readline() == "writing\n"
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    return child.pid


@pytest.mark.parametrize("writer", ["save_weights", "training_checkpoint"])
def test_sigkill_mid_write_keeps_the_previous_file_and_the_next_write_removes_the_debris(tmp_path, writer):
    target = tmp_path / ("m.safetensors" if writer == "save_weights" else "last.pt")
    target.write_bytes(b"previous good file")
    pid = _killed_mid_write(target)
    assert target.read_bytes() == b"previous good file"
    (debris,) = tmp_path.glob(f".{target.name}.{pid}.*.tmp")
    assert debris.read_bytes() == b"half a file"
    if writer == "save_weights":
        save_weights({"w": torch.ones(2)}, target)
        assert torch.equal(load_weights(target)[0]["w"], torch.ones(2))
    else:
        ckpt.save({"iteration": 3}, target)
        assert ckpt.load(target) == {"iteration": 3}
    assert not debris.exists() and not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_remove_stale_keeps_temporaries_of_running_writers(tmp_path):
    dead = _killed_mid_write(tmp_path / "run.json")
    live = tmp_path / f".last.pt.{os.getpid()}.abcdefgh.tmp"  # this process is writing it
    live.write_bytes(b"in progress")
    (tmp_path / "notes.tmp").write_text("not ours")
    debris = list(tmp_path.glob(f".run.json.{dead}.*.tmp"))
    assert len(debris) == 1 and remove_stale(tmp_path) == debris
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "notes.tmp"])


def _flip_bit_in(path: Path, pattern: bytes) -> None:
    data = bytearray(path.read_bytes())
    at = data.index(pattern)
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


MARK = torch.full((64,), 1234.5)  # tensor bytes easy to find in the file
MARK_BYTES = struct.pack("<f", 1234.5) * 8


def _state(iteration: int) -> dict:
    return {"model": {"w": MARK * iteration, "mark": MARK.clone()}, "iteration": iteration,
            "rng": [ckpt.rng_state()], "recipe": {"lr": 0.01, "steps": (3, 4)}}


def test_training_checkpoint_round_trip_keeps_the_previous_one(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save(_state(1), path)
    ckpt.save(_state(2), path)
    assert ckpt.load(path)["iteration"] == 2 and ckpt.load(ckpt.previous_path(path))["iteration"] == 1
    assert ckpt.previous_path(path).name == "last.previous.pt"
    loaded = ckpt.load(path)
    assert ckpt.content_sha256(loaded) == ckpt.content_sha256(_state(2) | {"rng": loaded["rng"]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.previous.pt", "last.pt"]


def test_bit_flip_in_last_checkpoint_is_refused_and_resume_falls_back_with_a_warning(tmp_path, caplog):
    path = tmp_path / "last.pt"
    ckpt.save(_state(1), path)
    ckpt.save(_state(2), path)
    _flip_bit_in(path, MARK_BYTES)
    with pytest.raises(ckpt.CheckpointError, match=f"{path}: content sha256 .* does not match"):
        ckpt.load(path)
    with caplog.at_level(logging.WARNING, logger="training.checkpoint"):
        state, used = ckpt.load_latest(path)
    assert used == ckpt.previous_path(path) and state["iteration"] == 1
    assert "resuming from the previous checkpoint" in caplog.text and str(path) in caplog.text

    _flip_bit_in(ckpt.previous_path(path), MARK_BYTES)
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint to resume from verifies") as err:
        ckpt.load_latest(path)
    assert str(path) in str(err.value) and str(ckpt.previous_path(path)) in str(err.value)
    assert ckpt.load_latest(tmp_path / "elsewhere" / "last.pt") is None


def test_truncated_checkpoint_error_names_the_file(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save(_state(1), path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ckpt.CheckpointError, match=f"^{path}: not a readable training checkpoint \\(.+\\)$"):
        ckpt.load(path)


def test_truncated_safetensors_error_names_the_file(tmp_path):
    path = save_weights({"w": torch.ones(8)}, tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ValueError, match=f"{path}: not a readable safetensors file"):
        load_weights(path)


@pytest.fixture
def counting_converter(monkeypatch):
    """A registry spec whose converter is the identity, counting its calls."""
    calls = []

    def identity(state_dict):
        calls.append(1)
        return dict(state_dict)

    monkeypatch.setitem(CONVERTERS, "identity_for_tests", identity)
    return replace(zoo.get_spec("fpn_r50_obj365"), converter="identity_for_tests"), calls


def test_converted_cache_is_verified_by_sha256_and_reconverted_when_damaged(tmp_path, counting_converter):
    spec, calls = counting_converter
    source = tmp_path / "model.pth"
    torch.save({"meta": {}, "state_dict": {"w": MARK.clone()}}, source)
    cached = source.with_name("model.pth.identity_for_tests.safetensors")
    record = cached.with_name(cached.name + ".sha256")

    assert torch.equal(_converted(spec, source)[0]["w"], MARK) and len(calls) == 1
    assert record.read_text() == f"{sha256_file(cached)}  {cached.name}\n"
    assert torch.equal(_converted(spec, source)[0]["w"], MARK) and len(calls) == 1  # from the cache

    _flip_bit_in(cached, MARK_BYTES)  # bit rot: the file still parses, one weight changed
    with pytest.warns(UserWarning, match=f"{cached}: sha256 .* expected .*recorded in {record}"):
        state = _converted(spec, source)[0]
    assert torch.equal(state["w"], MARK) and len(calls) == 2

    cached.write_bytes(cached.read_bytes()[:-10])  # truncated
    with pytest.warns(UserWarning, match="converting .* again"):
        assert torch.equal(_converted(spec, source)[0]["w"], MARK)
    assert len(calls) == 3

    torch.save({"meta": {}, "state_dict": {"w": MARK * 2}}, source)  # a new source (same size)
    with pytest.warns(UserWarning, match="converted from a source with sha256"):
        assert torch.equal(_converted(spec, source)[0]["w"], MARK * 2)
    assert len(calls) == 4 and torch.equal(_converted(spec, source)[0]["w"], MARK * 2) and len(calls) == 4
