"""Every command line as the user meets it (a subprocess): expected failures are one line on stderr naming what
failed and the fix, with a non-zero status and no traceback (``--debug`` shows it); ``--offline`` fails fast or uses
the cache; ``--mirror`` / ``$O365ZOO_MIRROR`` reach every download; missing optional packages name their extra."""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import PayloadServer
from PIL import Image

from zoo import get_spec, hub

REPO = Path(__file__).resolve().parents[1]
SOURCE = get_spec("fpn_r50_obj365").source  # an https source: not in any test cache, so every run must download
SOURCE_PATH = SOURCE.split("download.openmmlab.com", 1)[1]
CLOSED = "http://127.0.0.1:9"  # nothing listens: a download through it fails at once
SHIPPED_EXPORT = str(next((REPO / "zoo" / "weights" / "exports").glob("yolox_nano_coco-*")))  # the default's ONNX
# A CLI's main in a fresh process after SETUP (blocking modules, registering models); stdout's last line is the time
# main took, so that failing fast is measured without the interpreter's start.
WRAPPER = """
import sys, time
{setup}
from {module} import {function} as main
started = time.monotonic()
status = main(sys.argv[1:])
print(f"elapsed {{time.monotonic() - started:.3f}}")
sys.exit(status)
"""
# A command per CLI that downloads the weights of fpn_r50_obj365 first thing (OUT, PHOTO: paths under tmp_path).
DOWNLOADING = {
    "zoo download": ("zoo", "download", "fpn_r50_obj365"),
    "zoo predict": ("zoo", "predict", "PHOTO", "--model", "fpn_r50_obj365"),
    "zoo serve": ("zoo", "serve", "--model", "fpn_r50_obj365", "--port", "0"),
    "python -m export": ("export", "fpn_r50_obj365", "--out", "OUT"),
    "python -m export.triton": ("export.triton", "fpn_r50_obj365", "--repo", "OUT"),
    "python -m training eval": ("training", "eval", "fpn_r50_obj365", "--ann", "OUT"),
}


@pytest.fixture
def cli(tmp_path):
    """``cli(*args, module=None, setup="", **env)``: ``python -m ARGS...``, or ``module``'s ``main(ARGS)`` (with
    ``module:function``, that function) behind ``setup``, in a clean environment (empty cache, registry and
    Hugging Face home under tmp_path, online)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("O365ZOO_", "HF_"))}
    env = {**base, "O365ZOO_CACHE": str(tmp_path / "cache"), "O365ZOO_REGISTRY": str(tmp_path / "registry.json"),
           "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (120, 80, 40)).save(photo)
    places = {"OUT": str(tmp_path / "out"), "PHOTO": str(photo)}

    def run(*args: str, module: str | None = None, setup: str = "", **extra_env: str) -> subprocess.CompletedProcess:
        module, _, function = (module or "").partition(":")  # "package.module[:function]", main by default
        wrapped = WRAPPER.format(setup=setup, module=module, function=function or "main")
        command = [sys.executable, "-c", wrapped] if module else [sys.executable, "-m"]
        return subprocess.run([*command, *(places.get(a, a) for a in args)], capture_output=True, text=True,
                              check=False, timeout=300, cwd=REPO, env={**env, **extra_env})

    return run


def one_line(proc: subprocess.CompletedProcess, status: int | None = 2) -> str:
    """The one line on stderr of a failure with exit ``status`` (None: any but 0); a download's progress bar (a
    terminal clears it) is not a line."""
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "%|" not in line]
    assert proc.returncode == status if status is not None else proc.returncode != 0, proc.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def cached_path(url: str, tmp_path: Path) -> Path:
    return hub.cache_path(url, tmp_path / "cache")


def registering(name: str, source: str, sha256: str | None) -> str:
    """Setup code registering ``name``: yolox_nano_coco's spec with another source."""
    return ("import dataclasses\nfrom zoo.registry import get_spec, register\nregister(dataclasses.replace("
            f"get_spec('yolox_nano_coco'), name={name!r}, source={source!r}, sha256={sha256!r}))")


def test_download_failure_names_url_and_fixes_and_debug_shows_the_traceback(cli, tmp_path):
    line = one_line(cli("zoo", "download", "fpn_r50_obj365"))
    assert line.startswith(f"zoo download: download of {SOURCE} failed: ")
    fixes = ("--mirror", "$O365ZOO_MIRROR", f"copy the file to {cached_path(SOURCE, tmp_path)}", "--offline")
    assert all(fix in line for fix in fixes), line

    proc = cli("zoo", "download", "fpn_r50_obj365", "--debug")
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "zoo.hub.DownloadError" in proc.stderr


@pytest.mark.parametrize("switch", ["--offline", "O365ZOO_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_fails_fast_naming_the_cache_path(cli, tmp_path, switch):
    # the mirror is an unroutable address: a connection attempt would wait for the 30 s socket timeout
    flags, env = (["--offline"], {}) if switch == "--offline" else ([], {switch: "1"})
    proc = cli("download", "fpn_r50_obj365", *flags, module="zoo.cli", O365ZOO_MIRROR="http://10.255.255.1", **env)
    line = one_line(proc)
    assert f"(looked in {cached_path(SOURCE, tmp_path)})" in line and "downloads are off" in line
    elapsed = float(proc.stdout.split()[-1])
    assert elapsed < 0.5, elapsed


def test_offline_uses_the_cached_file(cli, tmp_path):
    weights = Path(get_spec("yolox_nano_coco").source)
    url = "https://models.example.org/zoo/yolox_nano_coco.safetensors"
    setup = registering("cached_copy", url, hashlib.sha256(weights.read_bytes()).hexdigest())
    cached = cached_path(url, tmp_path)
    cached.parent.mkdir(parents=True)
    shutil.copyfile(weights, cached)
    for flags, env in ((["--offline"], {}), ([], {"HF_HUB_OFFLINE": "1"})):
        proc = cli("download", "cached_copy", *flags, module="zoo.cli", setup=setup, **env)
        assert proc.returncode == 0 and proc.stdout.splitlines()[0] == str(cached), proc.stderr

    cached.write_bytes(b"edited")  # offline, a file that no longer verifies is reported and left for the user
    line = one_line(cli("download", "cached_copy", "--offline", module="zoo.cli", setup=setup))
    assert f"sha256 mismatch for {cached}" in line and cached.read_bytes() == b"edited"


def test_hf_source_offline_names_the_huggingface_cache(cli, tmp_path):
    setup = registering("hub_copy", "hf://org/repo/w.safetensors", None)
    line = one_line(cli("download", "hub_copy", module="zoo.cli", setup=setup, HF_HUB_OFFLINE="1"))
    assert "hf://org/repo/w.safetensors is not in the cache" in line and str(tmp_path / "hf" / "hub") in line


def _last_or_only_line(command: str, proc: subprocess.CompletedProcess) -> str:
    """zoo serve loads its models inside the server, which logs, stops with status 1 and says why last."""
    if command == "zoo serve":
        assert proc.returncode == 1, proc.stderr[-3000:]
        return proc.stderr.strip().splitlines()[-1]
    return one_line(proc)


@pytest.mark.parametrize("command", DOWNLOADING)
def test_offline_flag_on_every_downloading_command(cli, tmp_path, command):
    line = _last_or_only_line(command, cli(*DOWNLOADING[command], "--offline"))
    assert f"(looked in {cached_path(SOURCE, tmp_path)})" in line


@pytest.mark.parametrize("command", DOWNLOADING)
def test_mirror_flag_on_every_downloading_command(cli, command):
    line = _last_or_only_line(command, cli(*DOWNLOADING[command], "--mirror", CLOSED))
    assert f"download of {CLOSED}{SOURCE_PATH} failed" in line


@pytest.mark.parametrize("command", ["zoo download", "python -m export"])
def test_mirror_from_the_environment(cli, command):
    line = one_line(cli(*DOWNLOADING[command], O365ZOO_MIRROR=CLOSED))
    assert f"download of {CLOSED}{SOURCE_PATH} failed" in line


@pytest.mark.parametrize(("command", "args"), [
    ("train", ("train", "o365_retinanet_1350k", "--init", "fpn_r50_obj365")),
    ("finetune_cmd", ("finetune", "--train", "voc")),
])
def test_training_commands_take_the_download_flags(cli, command, args):
    """train --init and finetune download deep inside training: their flags become the process's settings first."""
    setup = (f"import os, training.cli\ntraining.cli.{command} = "
             "lambda args: print(os.environ['O365ZOO_MIRROR'], os.environ['O365ZOO_OFFLINE'])")
    proc = cli(*args, "--mirror", CLOSED, "--offline", module="training.cli", setup=setup)
    assert proc.returncode == 0 and proc.stdout.splitlines()[0] == f"{CLOSED} 1", proc.stderr


def test_checksum_error_names_both_urls_and_the_mirror_fix(cli):
    with PayloadServer(files={SOURCE_PATH: b"not the published checkpoint"}) as server:
        line = one_line(cli("zoo", "download", "fpn_r50_obj365", "--mirror", server.origin))
        assert f"sha256 mismatch for {SOURCE} (from {server.origin}{SOURCE_PATH})" in line and "--mirror" in line


def test_disk_too_small_is_one_line_with_the_space_needed(cli):
    setup = "import shutil, types\nshutil.disk_usage = lambda path: types.SimpleNamespace(total=1e9, used=0, free=100)"
    with PayloadServer(files={SOURCE_PATH: bytes(300_000)}) as server:
        line = one_line(cli("download", "fpn_r50_obj365", "--mirror", server.origin, module="zoo.cli", setup=setup))
    assert "not enough space in" in line and "needs 300000 bytes" in line and "$O365ZOO_CACHE" in line


@pytest.mark.parametrize("args", [
    ("zoo", "download", "fpn_r50_obj356"),
    ("zoo", "info", "fpn_r50_obj356"),
    ("zoo", "serve", "--model", "fpn_r50_obj356"),
    ("export", "fpn_r50_obj356", "--out", "OUT"),
    ("export.triton", "fpn_r50_obj356", "--repo", "OUT"),
    ("training", "eval", "fpn_r50_obj356", "--ann", "OUT"),
])
def test_unknown_model_is_the_one_line_with_the_nearest_names(cli, args):
    line = one_line(cli(*args), None)  # zoo serve: status 1, before anything is bound or loaded
    assert "unknown model 'fpn_r50_obj356'; did you mean fpn_r50_obj365" in line


@pytest.mark.parametrize(("args", "message"), [
    (("zoo", "convert", "missing.pth", "OUT"), "No such file or directory: missing.pth"),
    (("export", "missing.safetensors", "--out", "OUT"), "checkpoint not found: missing.safetensors"),
    (("export.parity", "yolox_nano_coco", "--photos", "missing.jpg"), "photo not found: missing.jpg"),
    (("zoo", "predict", "--score-threshold", "high", "PHOTO"), "invalid float value: 'high'"),
    (("zoo", "download", "fpn_r50_obj365", "--mirror", "ftp://mirror"), "mirror must be an http(s) base URL"),
    (("zoo", "serve", "--port", "eighty"), "argument --port: invalid int value: 'eighty'"),
    (("export", "yolox_nano_coco", "--out", "OUT", "--size", "big"), "size must be H or HxW in pixels"),
])
def test_missing_files_and_bad_values_are_one_line(cli, args, message):
    assert message in one_line(cli(*args))


def test_serve_on_a_port_in_use_is_one_line_before_loading(cli):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line(cli("zoo", "serve", "--host", "127.0.0.1", "--port", str(port)))
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in line and "--port" in line


@pytest.mark.parametrize(("blocked", "module", "args", "install"), [
    ("onnx", "export.__main__", ("yolox_nano_coco", "--out", "OUT", "--random-weights", "--no-parity",
                                 "--size", "128"), 'pip install -e ".[export]"'),
    ("onnxruntime", "export.cli:parity_main", (SHIPPED_EXPORT,), 'pip install -e ".[export]"'),
    ("openvino", "export.cli:parity_main", (SHIPPED_EXPORT, "--runtime", "openvino"), 'pip install -e ".[export]"'),
    ("tritonclient", "export.triton", ("yolox_nano_coco", "--repo", "OUT", "--random-weights", "--no-parity",
                                       "--size", "128"), 'pip install -e ".[export]"'),
    ("fastapi", "zoo.cli", ("serve",), 'pip install -e ".[serving]"'),
    ("uvicorn", "serving.cli", (), 'pip install -e ".[serving]"'),
    ("skimage", "export.__main__", ("yolox_nano_coco", "--out", "OUT", "--random-weights", "--size", "128"),
     "pip install scikit-image"),
])
def test_missing_optional_package_names_the_install(cli, blocked, module, args, install):
    line = one_line(cli(*args, module=module, setup=f"sys.modules[{blocked!r}] = None  # as if not installed"))
    assert install in line and ("scikit-image" in line if blocked == "skimage" else f"(module {blocked})" in line)
