"""Safe reading and atomic writing of weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.checkpoint import UnsafeCheckpointError, load_foreign, load_weights, save_weights


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


def test_interrupted_write_leaves_the_previous_file(tmp_path, monkeypatch):
    import safetensors.torch

    def dies_halfway(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt

    target = tmp_path / "m.safetensors"
    target.write_bytes(b"previous good file")
    monkeypatch.setattr(safetensors.torch, "save_file", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_weights({"w": torch.ones(2)}, target)
    assert target.read_bytes() == b"previous good file"
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
