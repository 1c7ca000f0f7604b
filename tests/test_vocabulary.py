"""zoo.vocabulary: importable without torch; one ModelInfo whether it comes from a spec or an export's metadata."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import zoo
from zoo.specs import PACKAGED_EXPORTS
from zoo.vocabulary import BF16, DETECTION, FP32, INT8, MODEL_PRECISIONS, SEGMENTATION, TASKS, ModelInfo, cache_root

REPO = Path(__file__).resolve().parents[1]
PACKAGED_EXPORT = next(folder for (name, _), (folder, _) in PACKAGED_EXPORTS.items() if name == zoo.DEFAULT_MODEL
                       ) / "metadata.json"


def test_imports_no_torch() -> None:
    code = "import sys, zoo.vocabulary; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60, check=False).returncode == 0


def test_every_spec_task_is_a_known_task() -> None:
    assert {zoo.get_spec(name).task for name in zoo.list_models()} <= set(TASKS) == {DETECTION, SEGMENTATION}


def test_model_info_from_spec_equals_from_the_packaged_export() -> None:
    meta = json.loads(PACKAGED_EXPORT.read_text())
    from_export = ModelInfo.from_manifest(meta, backend="onnxruntime")
    from_spec = ModelInfo.from_spec(zoo.get_spec(zoo.DEFAULT_MODEL), backend="onnxruntime")
    assert from_export == from_spec
    assert from_spec.precision == FP32 and from_spec.label_offset == 1 and len(from_spec.categories) == 80


@pytest.mark.parametrize(("recorded", "runtime", "expected"), [(None, "f32", FP32), (None, BF16, BF16),
                                                                (INT8, "f32", INT8), (INT8, BF16, INT8)])
def test_manifest_precision(recorded: str | None, runtime: str, expected: str) -> None:
    meta = json.loads(PACKAGED_EXPORT.read_text())
    meta.pop("precision", None)
    if recorded is not None:
        meta["precision"] = recorded
    precision = ModelInfo.from_manifest(meta, runtime_precision=runtime).precision
    assert precision == expected and precision in MODEL_PRECISIONS


def test_spec_categories_can_be_overridden() -> None:
    spec = replace(zoo.get_spec(zoo.DEFAULT_MODEL), task=SEGMENTATION, background=False)
    info = ModelInfo.from_spec(spec, ["a", "b"], backend="torch")
    assert (info.categories, info.label_offset, info.task, info.backend) == (("a", "b"), 0, SEGMENTATION, "torch")


def test_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("O365ZOO_CACHE", str(tmp_path / "env"))
    assert cache_root(tmp_path / "given") == tmp_path / "given"
    assert cache_root() == tmp_path / "env"
    monkeypatch.delenv("O365ZOO_CACHE")
    assert cache_root() == Path.home() / ".cache" / "objects365-zoo"


def test_model_spec_and_categories_read_what_describe_attached() -> None:
    nn = pytest.importorskip("torch.nn")
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="carries no zoo spec"):
        zoo.model_spec(model)
    with pytest.raises(TypeError, match="carries no category names"):
        zoo.model_categories(model)
    spec = zoo.get_spec(zoo.DEFAULT_MODEL)
    assert zoo.describe(model, spec, ["a", "b"]) is model
    assert zoo.model_spec(model) is spec and model.spec is spec
    assert zoo.model_categories(model) == model.categories == ("a", "b")
    assert [name for name, _ in model.named_parameters()] == ["weight", "bias"]  # attributes, not parameters
