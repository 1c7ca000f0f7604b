"""An export folder is checked before it is trusted (export.read_metadata, the ONNX serving backend): the artefact
path stays inside the folder, the declared input has a size an export can have, and a missing or unreadable file is
a one-line error naming it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from export import ExportError, read_metadata

META = {"format": "objects365-zoo-export/1", "artifact": "model.onnx", "artifact_format": "onnx", "task": "detection",
        "input": {"name": "images", "shape": ["batch", 3, 64, 96], "dtype": "float32"}}


def _folder(root: Path, model: bytes | None = b"\x08\x07", **changes) -> Path:
    folder = root / "export"
    folder.mkdir()
    (folder / "metadata.json").write_text(json.dumps({**META, **changes}))
    if model is not None:
        (folder / "model.onnx").write_bytes(model)
    return folder


def test_a_well_formed_folder_reads(tmp_path):
    assert read_metadata(_folder(tmp_path)) == META


@pytest.mark.parametrize("artifact", ["../model.onnx", "sub/../../model.onnx", "/etc/passwd", "", None])
def test_artifact_outside_the_folder_is_refused(tmp_path, artifact):
    (tmp_path / "model.onnx").write_bytes(b"outside")
    folder = _folder(tmp_path, artifact=artifact)
    with pytest.raises(ExportError, match=f"^{folder / 'metadata.json'}: 'artifact' must"):
        read_metadata(folder)


def test_artifact_symlinked_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "elsewhere.onnx").write_bytes(b"outside")
    folder = _folder(tmp_path, model=None)
    (folder / "model.onnx").symlink_to(tmp_path / "elsewhere.onnx")
    with pytest.raises(ExportError, match="must be a relative path inside the export folder"):
        read_metadata(folder)


@pytest.mark.parametrize("shape", [["batch", 3, 100_000, 100_000], ["batch", 3, 8, 64], ["batch", 4, 64, 64],
                                   ["batch", 3, 64.5, 64], ["batch", 3, "64", 64], [3, 64, 64], None])
def test_absurd_or_malformed_input_is_refused(tmp_path, shape):
    folder = _folder(tmp_path, input={"name": "images", "shape": shape})
    with pytest.raises(ExportError, match=r"input shape must be \[batch, 3, H, W\] with integers H, W >= 32 and "
                                          r"H x W <= 16777216 pixels, got"):
        read_metadata(folder)


def test_missing_or_unreadable_files_are_named(tmp_path):
    with pytest.raises(ExportError, match=f"^{tmp_path / 'metadata.json'}: missing"):
        read_metadata(tmp_path)
    folder = _folder(tmp_path, model=None)
    with pytest.raises(ExportError, match=f"^{folder / 'model.onnx'}: missing \\(the model file that "):
        read_metadata(folder)
    (folder / "metadata.json").write_text('{"artifact": "model.onnx", ')
    with pytest.raises(ExportError, match=f"^{folder / 'metadata.json'}: not readable as JSON"):
        read_metadata(folder)


def test_onnx_backend_names_a_corrupt_model_file_in_one_line(tmp_path):
    pytest.importorskip("onnxruntime")
    from serving.backends.onnx_backend import OnnxBackend

    folder = _folder(tmp_path, model=b"not a protobuf" * 100)
    with pytest.raises(ExportError) as err:
        OnnxBackend(folder, threads=1)
    assert str(err.value).startswith(f"{folder / 'model.onnx'}: not a readable ONNX model")
    assert "\n" not in str(err.value)
    folder = tmp_path / "export"
    torchscript = {**META, "artifact": "model.pt", "artifact_format": "torchscript"}
    (folder / "metadata.json").write_text(json.dumps(torchscript))
    (folder / "model.pt").write_bytes(b"x")
    with pytest.raises(ExportError, match="expected an ONNX export, found artifact_format 'torchscript'"):
        OnnxBackend(folder, threads=1)
