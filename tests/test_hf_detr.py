"""DETR-family detectors through transformers (issue 15), offline: each architecture is built from a small random
config, saved in the Hub's layout by transformers itself, served by a local HTTP server playing the Hugging Face
endpoint, and loaded through the zoo's real hub code (revision and sha256 checks included)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("transformers", reason='pip install -e ".[detr]"')

from hub_server import PayloadServer  # noqa: E402

import zoo  # noqa: E402
from zoo import hub  # noqa: E402
from zoo.categories import get_categories, map_indices, register_categories  # noqa: E402
from zoo.models.hf_detr import id2label_names, is_class_row_key, processor_settings  # noqa: E402
from zoo.registry import get_spec, register  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SIDE = 64
# D-FINE and RT-DETR pick their queries by top-k over the encoder's anchors (8x8 + 4x4 + 2x2 at 64 px): with as many
# queries as anchors, the near-ties of tiny random networks cannot swap an anchor in or out between torch and ONNX
# Runtime (a trained model at 640 px has 300 queries over 8400 anchors, and the parity check allows 3% recall loss).
QUERIES = 84
# The checkpoint's own names (Objects365 v2 spelling and case); the registry's list is the zoo's spelling.
HUB_NAMES = ("Person", "Bicycle", "Car", "Moniter/TV", "Dog")
CATEGORY_KEY = "hf_detr_test5"


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch):
    """The test entries and category list live in copies of the registries, gone after each test."""
    import zoo.categories
    import zoo.registry

    monkeypatch.setattr(zoo.registry, "_SPECS", dict(zoo.registry._SPECS))
    monkeypatch.setattr(zoo.categories, "_REGISTRY", dict(zoo.categories._REGISTRY))
    register_categories(CATEGORY_KEY, ("person", "bicycle", "car", "monitor/tv", "dog"))


def tiny_model(family: str, names: tuple[str, ...] = HUB_NAMES):
    """A random ``transformers`` model of ``family`` small enough for a 64 px test, with ``names`` as id2label."""
    import transformers as tf

    labels = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    torch.manual_seed(0)
    if family == "d_fine":
        backbone = tf.HGNetV2Config(
            stem_channels=[3, 8, 8], stage_in_channels=[8, 16, 32, 64], stage_mid_channels=[8, 16, 16, 32],
            stage_out_channels=[16, 32, 64, 64], stage_num_blocks=[1, 1, 1, 1], stage_numb_of_layers=[2, 2, 2, 2],
            stage_kernel_size=[3, 3, 5, 5], hidden_sizes=[16, 32, 64, 64], depths=[1, 1, 1, 1],
            out_features=["stage2", "stage3", "stage4"])
        config = tf.DFineConfig(
            backbone_config=backbone, encoder_in_channels=[32, 64, 64], encoder_hidden_dim=32, d_model=32,
            decoder_in_channels=[32, 32, 32], encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=QUERIES,
            decoder_layers=2, num_denoising=4, hidden_expansion=0.5, encoder_layers=1, decoder_n_points=[2, 2, 2],
            decoder_attention_heads=2, encoder_attention_heads=2, **labels)
        return tf.DFineForObjectDetection(config), tf.RTDetrImageProcessor
    if family == "rt_detr":
        backbone = tf.RTDetrResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                                         layer_type="basic", out_features=["stage2", "stage3", "stage4"])
        config = tf.RTDetrConfig(
            backbone_config=backbone, encoder_in_channels=[16, 32, 64], encoder_hidden_dim=32, d_model=32,
            decoder_in_channels=[32, 32, 32], encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=QUERIES,
            decoder_layers=2, num_denoising=4, encoder_layers=1, decoder_attention_heads=2, encoder_attention_heads=2,
            decoder_n_points=2, **labels)
        return tf.RTDetrForObjectDetection(config), tf.RTDetrImageProcessor
    backbone = tf.LwDetrViTConfig(hidden_size=32, num_attention_heads=2, num_hidden_layers=2, mlp_ratio=2,
                                  image_size=SIDE, pretrain_image_size=32, out_indices=[1, 2], window_block_indices=[0],
                                  num_windows=4, num_windows_side=2)
    config = tf.LwDetrConfig(backbone_config=backbone, d_model=32, num_queries=10, decoder_layers=2,
                             decoder_self_attention_heads=2, decoder_cross_attention_heads=2, decoder_ffn_dim=64,
                             projector_scale_factors=[1.0], group_detr=2, **labels)
    return tf.LwDetrForObjectDetection(config), tf.RTDetrImageProcessor


FAMILIES = ("d_fine", "rt_detr", "lw_detr")


def hub_files(family: str, names: tuple[str, ...] = HUB_NAMES) -> dict[str, bytes]:
    """config.json, preprocessor_config.json and model.safetensors as ``save_pretrained`` writes them."""
    model, processor_cls = tiny_model(family, names)
    with torch.no_grad():  # weights as training leaves them: no zero-initialised scorer, distinct class rows
        for key, param in model.named_parameters():
            param.add_(torch.randn_like(param) * (1.0 if is_class_row_key(key) else 0.05))
    processor = processor_cls(size={"height": SIDE, "width": SIDE}, do_normalize=family == "lw_detr",
                              image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        return {name: (Path(folder) / name).read_bytes()
                for name in ("config.json", "preprocessor_config.json", "model.safetensors")}


# A head indexed by category id, class 0 unused (the D-FINE and LW-DETR Objects365 checkpoints are 366-way).
UNUSED_FIRST = "rt_detr_unused_first"


@pytest.fixture(scope="module")
def repos():
    files = {family: hub_files(family) for family in FAMILIES}
    files[UNUSED_FIRST] = hub_files("rt_detr", ("N/A", *HUB_NAMES))
    return files


@pytest.fixture
def hf_hub(repos, tmp_path, monkeypatch):
    """The emulated Hub: org/<family> at COMMIT; zoo and huggingface-hub pointed at it and at a fresh cache."""
    import huggingface_hub.constants

    server = PayloadServer()
    for family, files in repos.items():
        for name, data in files.items():
            path = f"/org/{family}/resolve/{COMMIT}/{name}"
            server.files[path] = data
            server.extra_headers[path] = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
    server.start()
    monkeypatch.setenv(hub.MIRROR_ENV, server.origin)
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    yield server
    server.stop()


def spec_name(family: str, repos, *, sha256: str | None = "real", revision: str = COMMIT,
              unused_first_class: bool = False) -> str:
    """Register (once) a test entry like the built-in ones, for ``family`` on the emulated Hub."""
    digest = hashlib.sha256(repos[family]["model.safetensors"]).hexdigest() if sha256 == "real" else sha256
    name = f"_test_{family}_{revision[:6]}_{(digest or 'none')[:6]}"
    try:
        get_spec(name)
    except LookupError:
        base = get_spec("dfine_s_obj365")
        pin = f"@{revision}"
        register(dataclasses.replace(
            base, name=name, categories=CATEGORY_KEY, sha256=digest,
            source=f"hf://org/{family}/model.safetensors{pin}",
            preprocessing=dataclasses.replace(base.preprocessing, min_size=SIDE, max_size=SIDE),
            build_kwargs={"config": f"hf://org/{family}/config.json{pin}",
                          "processor": f"hf://org/{family}/preprocessor_config.json{pin}",
                          "categories": CATEGORY_KEY, "unused_first_class": unused_first_class}))
    return name


def assert_same_logits_as_transformers(model, files: dict[str, bytes], family: str, first: int = 0) -> None:
    """The zoo model computes what transformers' own ``from_pretrained`` of the same files computes (class
    ``first`` onwards: the zoo drops an unused class 0)."""
    reference, _ = tiny_model(family)
    with tempfile.TemporaryDirectory() as folder:
        for name, data in files.items():
            (Path(folder) / name).write_bytes(data)
        reference = type(reference).from_pretrained(folder).eval()
    x = torch.rand(1, 3, SIDE, SIDE)
    with torch.inference_mode():
        expected = reference(pixel_values=model.pixel_values(x)).logits[..., first:]
        logits, _ = model.raw_outputs(x)
    torch.testing.assert_close(logits, expected)


def photo(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(48, 80, 3), dtype=np.uint8)


@pytest.mark.parametrize("family", FAMILIES)
def test_load_through_the_hub_matches_transformers(family, repos, hf_hub):
    model = zoo.load(spec_name(family, repos), progress=False)
    assert model.categories == get_categories(CATEGORY_KEY)
    assert type(model).__name__.startswith("Zoo")
    assert_same_logits_as_transformers(model, repos[family], family)
    model.score_thresh = 0.0  # random heads score about sigmoid(prior bias) = 0.01
    result = zoo.detect(model, [photo()])[0]
    assert result["boxes"].shape[1] == 4 and len(result["boxes"]) == len(result["scores"]) > 0
    assert set(result["labels"]) <= set(range(1, len(HUB_NAMES) + 1))
    assert (result["boxes"][:, 2] <= 80 + 1e-3).all() and (result["boxes"][:, 3] <= 48 + 1e-3).all()
    # served from the cache afterwards: no second download of the weights
    zoo.load(spec_name(family, repos), progress=False)
    assert len(hf_hub.get_requests(f"/org/{family}/resolve/{COMMIT}/model.safetensors")) == 1


def test_processor_settings_come_from_the_checkpoint(repos):
    for family in FAMILIES:
        settings = processor_settings(json.loads(repos[family]["preprocessor_config.json"]))
        assert settings["resize_to"] == (SIDE, SIDE)
        assert (settings["mean"] is not None) == (family == "lw_detr")
    with pytest.raises(ValueError, match="rescale_factor"):
        processor_settings({"do_rescale": True, "rescale_factor": 1.0})
    by_edge = processor_settings({"size": {"shortest_edge": 800, "longest_edge": 1333}, "do_normalize": True,
                                  "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]})
    assert by_edge == {"resize_to": None, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}


def test_id2label_is_read_in_order_and_checked_against_the_registry(repos, hf_hub):
    config = json.loads(repos["rt_detr"]["config.json"])
    assert id2label_names(config) == HUB_NAMES
    with pytest.raises(ValueError, match="without gaps"):
        id2label_names({"id2label": {"0": "a", "2": "b"}})
    from zoo.models.hf_detr import build_hf_detr

    with pytest.raises(ValueError, match="id2label is not the registry's 'coco' list"):
        build_hf_detr(len(HUB_NAMES) + 1, config=config, categories="coco")
    placeholders = {**config, "id2label": {str(i): f"LABEL_{i}" for i in range(len(HUB_NAMES))}}
    with pytest.warns(UserWarning, match="placeholder names"):
        build_hf_detr(len(HUB_NAMES) + 1, config=placeholders, categories="coco")


def test_wrong_sha256_and_unknown_revision_are_refused(repos, hf_hub):
    with pytest.raises(hub.ChecksumError, match="sha256 mismatch"):
        zoo.load(spec_name("rt_detr", repos, sha256="0" * 64), progress=False)
    with pytest.raises(hub.DownloadError):
        zoo.load(spec_name("rt_detr", repos, revision="f" * 40), progress=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_head_transfer_maps_every_class_row(family, repos, hf_hub):
    name = spec_name(family, repos)
    source = zoo.load(name, progress=False)
    wanted = ["dog", "tv", "zebra", "person"]  # tv -> 'monitor/tv' through the alias table, zebra is fresh
    mapping = map_indices(list(source.categories), wanted)
    assert mapping == [4, 3, None, 0]
    model = zoo.load(name, categories=wanted, progress=False)
    assert model.categories == tuple(wanted) and model.config.num_labels == len(wanted)
    src, dst = source.state_dict(), model.state_dict()
    keys = [k for k in dst if is_class_row_key(k)]
    assert any(k.endswith("class_embed.0.weight") or k == "class_embed.weight" for k in keys)
    for key in keys:
        for j, m in enumerate(mapping):
            if m is not None:
                torch.testing.assert_close(dst[key][j], src[key][m])
        assert not torch.equal(dst[key][2], src[key][0])
        if "denoising_class_embed" in key:  # the padding row of the denoising queries is kept
            torch.testing.assert_close(dst[key][-1], src[key][-1])
    other = [k for k in dst if not is_class_row_key(k)]
    assert all(torch.equal(dst[k], src[k]) for k in other)
    model.score_thresh = 0.0
    out = model([torch.rand(3, SIDE, SIDE)])[0]
    assert len(out["labels"]) == min(model.detections_per_img, model.config.num_queries * len(wanted))
    assert out["labels"].min() >= 1 and out["labels"].max() <= len(wanted)
    # a finetuning step runs from the transferred head
    torch.manual_seed(0)
    model.train()
    losses = model([torch.rand(3, SIDE, SIDE)], [{"boxes": torch.tensor([[4.0, 4.0, 40.0, 30.0]]),
                                                   "labels": torch.tensor([3])}])
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_export_parity_and_serving(family, repos, hf_hub, tmp_path):
    pytest.importorskip("onnxruntime")
    from export.api import export_model

    name = spec_name(family, repos)
    photos = {f"p{i}": Image.fromarray(photo(i)) for i in range(2)}
    path, report = export_model(name, tmp_path / "export", photos=photos, score_threshold=0.0)
    assert report.passed, report.table()
    meta = json.loads((tmp_path / "export" / "metadata.json").read_text())
    assert meta["categories"] == list(get_categories(CATEGORY_KEY)) and meta["input"]["shape"][2:] == [SIDE, SIDE]

    from export.runtime import runner_for

    runner = runner_for("onnx", path, ("boxes", "scores", "labels", "num_detections"))
    batch = np.random.default_rng(0).random((3, 3, SIDE, SIDE), dtype=np.float32)
    out = runner(batch)
    assert out["boxes"].shape[0] == 3 and (out["num_detections"] > 0).all()  # dynamic batch
    pytest.importorskip("openvino")
    from export.api import parity_of_export_dir

    on_openvino = parity_of_export_dir(tmp_path / "export", photos=photos, runtime="openvino")
    assert on_openvino.passed, on_openvino.table()

    import io
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "serving"))
    from serving_helpers import running

    from serving import ServingConfig
    from serving.backends.onnx_backend import OnnxBackend

    backend = OnnxBackend.from_config(name, ServingConfig(backend="onnxruntime", onnx=path, threads=1,
                                                          onnx_cache=tmp_path / "onnx_cache"))
    buffer = io.BytesIO()
    photos["p0"].save(buffer, format="PNG")
    with running(ServingConfig(score_threshold=0.0), [backend]) as client:
        response = client.post("/v1/detect", files={"file": ("p.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 200, response.text
    detections = response.json()["detections"]
    assert detections and {d["name"] for d in detections} <= set(get_categories(CATEGORY_KEY))


def test_without_transformers_one_line_names_the_extra(repos, hf_hub, monkeypatch):
    import sys
    import tomllib

    from zoo import cli_common
    from zoo.models import hf_detr

    hf_detr.zoo_detector.cache_clear()
    monkeypatch.setitem(sys.modules, "transformers", None)
    try:
        with pytest.raises(ModuleNotFoundError, match=r'objects365-zoo\[detr\]') as err:
            zoo.load(spec_name("rt_detr", repos), progress=False)
    finally:
        hf_detr.zoo_detector.cache_clear()
    line = cli_common.describe(err.value)
    assert line is not None and "\n" not in line and '.[detr]' in line
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    core = project["dependencies"] + project["optional-dependencies"]["torch"]
    assert not [d for d in core if d.startswith("transformers")]
    assert any(d.startswith("transformers") for d in project["optional-dependencies"]["detr"])


def test_unused_first_class_is_dropped(repos, hf_hub):
    """A 6-way checkpoint whose class 0 is unused loads as the registry's 5 classes, its rows 1..5 kept."""
    from zoo.models.hf_detr import build_hf_detr

    config = json.loads(repos[UNUSED_FIRST]["config.json"])
    with pytest.raises(ValueError, match="unused_first_class=True"):
        build_hf_detr(len(HUB_NAMES) + 1, config=config, categories=CATEGORY_KEY)
    model = zoo.load(spec_name(UNUSED_FIRST, repos, unused_first_class=True), progress=False)
    assert model.config.num_labels == len(HUB_NAMES) and model.categories == get_categories(CATEGORY_KEY)
    assert_same_logits_as_transformers(model, repos[UNUSED_FIRST], "rt_detr", first=1)


def test_finetune_from_a_detr_entry_publishes_a_loadable_model(repos, hf_hub, tmp_path, monkeypatch):
    """``training.finetune`` from a DETR-family entry: the head transferred through the mapping, the finetune loop
    run on transformers' loss terms, the result published and loadable by name with the dataset's classes."""
    from tiny_detection_data import CLASSES, write_voc

    import training

    monkeypatch.setenv("O365ZOO_REGISTRY", str(tmp_path / "registry.json"))
    torch.set_num_threads(2)
    root = write_voc(tmp_path / "voc")
    result = training.finetune(root, val=root, init=spec_name("rt_detr", repos), epochs=2, eval_every=2,
                               name="detr_space", out=tmp_path / "run", progress=False, workers=0)
    assert result.mapped == {"person": "person"} and len(result.fresh) == len(CLASSES) - 1
    model = zoo.load("detr_space", progress=False)
    assert set(model.categories) == set(CLASSES) and model.config.num_labels == len(CLASSES)
    assert zoo.detect(model, [root / "JPEGImages" / "rocket.jpg"])[0]["boxes"].shape[1] == 4
