"""``python -m serving`` as a process: default model offline, JSON logs with request ids, graceful SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from serving_helpers import encode

from serving.cli import build_parser, main
from serving.config import ServingConfig, SettingsError, load_config

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(proc: subprocess.Popen, url: str, output: Callable[[], str], timeout_s: float = 120) -> None:
    """Until the server process answers /readyz with 200; ``output()`` explains a process that ended."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, output()
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"server not ready in {timeout_s:g} s"
        time.sleep(0.2)


def test_flags_override_environment_which_overrides_defaults(monkeypatch):
    for name, value in {"BACKEND": "onnxruntime", "MAX_BATCH_SIZE": "3", "MODELS": "a, b",
                        "PRETRAINED": "true"}.items():
        monkeypatch.setenv(f"O365ZOO_SERVE_{name}", value)
    args = vars(build_parser().parse_args(["--max-batch-size", "5", "--random-weights"]))
    config = load_config(**args)
    assert (config.backend, config.max_batch_size, config.models, config.pretrained) == ("onnxruntime", 5,
                                                                                         ["a", "b"], False)
    monkeypatch.delenv("O365ZOO_SERVE_MODELS")
    assert load_config().models == ["yolox_nano_coco"]
    monkeypatch.setenv("O365ZOO_SERVE_PORT", "eighty")
    with pytest.raises(SettingsError, match=r"^invalid setting: --port / O365ZOO_SERVE_PORT: .*integer.*'eighty'"):
        load_config()


def test_help_lists_every_setting_with_its_variable_and_default(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name, field in ServingConfig.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = ",".join(default) if isinstance(default, list) else "unset" if default is None else default
        assert f"[env O365ZOO_SERVE_{name.upper()}; default: {shown}]" in text, name
    assert "--model NAME" in text and "--random-weights" in text and "{torch,onnxruntime,openvino,triton}" in text


def test_invalid_settings_are_one_line_naming_flag_and_variable(monkeypatch, capsys):
    monkeypatch.setenv("O365ZOO_SERVE_QUEUE_SIZE", "0")
    assert main(["--score-threshold", "2"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("python -m serving: invalid setting: ")
    assert "--score-threshold / O365ZOO_SERVE_SCORE_THRESHOLD: Input should be less than or equal to 1 (got 2.0)" \
        in line and "--queue-size / O365ZOO_SERVE_QUEUE_SIZE: Input should be greater than or equal to 1" in line
    monkeypatch.delenv("O365ZOO_SERVE_QUEUE_SIZE")
    assert main(["--precision", "bf16"]) == 2
    assert "invalid setting: precision bf16 needs the openvino backend" in capsys.readouterr().err


@pytest.mark.parametrize(("module", "package"), [("fastapi", "fastapi"), ("pydantic_settings", "pydantic-settings")])
def test_python_m_serving_without_the_extra_names_it_in_one_line(module, package):
    code = (f"import runpy, sys; sys.modules[{module!r}] = None; sys.argv = ['serving', '--random-weights']; "
            "runpy.run_module('serving', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line == (f'python -m serving: {package} is not installed (module {module}): pip install -e ".[serving]" '
                    f"(or pip install {package})")


def test_unknown_model_fails_before_binding():
    with pytest.raises(SystemExit, match="unknown model 'fpn_r50_obj356'.*did you mean"):
        main(["--model", "fpn_r50_obj356"])
    assert main(["--backend", "torch", "--score-threshold", "2"]) == 2


def test_a_model_that_cannot_load_ends_the_server_with_status_1(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("O365ZOO_CACHE", str(tmp_path))
    monkeypatch.setenv("O365ZOO_MIRROR", "http://127.0.0.1:9")  # nothing listens: the download fails at once
    assert main(["--model", "fpn_r50_obj365", "--port", str(free_port())]) == 1
    assert "could not load the models" in capsys.readouterr().err


def test_default_server_process_logs_json_and_stops_gracefully(photos):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "serving", "--port", str(port), "--threads", "2"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url, lambda: proc.communicate()[1][-3000:])
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
        # the embedded default, offline: everyday objects in real photos
        expected = {"astronaut": "person", "chelsea": "cat", "coffee": "cup"}
        for i, (name, label) in enumerate(expected.items()):
            response = httpx.post(f"{url}/v1/detect", content=encode(photos[name], "JPEG"),
                                  headers={"x-request-id": f"cli-test-{i + 1}"}, timeout=60)
            body = response.json()
            assert response.status_code == 200 and body["model"]["name"] == "yolox_nano_coco"
            found = [(d["name"], d["score"]) for d in body["detections"]]
            assert found and found[0][0] == label, (name, found)  # the most confident answer
        person = httpx.post(f"{url}/v1/detect", content=encode(photos["astronaut"], "PNG"), timeout=60).json()
        assert person["detections"][0]["name"] == "person" and person["detections"][0]["score"] >= 0.5
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    # uvicorn re-raises the captured SIGTERM once shutdown is complete: the process ends "killed by SIGTERM"
    assert proc.returncode in (0, -signal.SIGTERM), stderr[-3000:]
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    request = next(r for r in records if r["msg"] == "request" and r["request_id"] == "cli-test-1")
    assert request["path"] == "/v1/detect" and request["status"] == 200 and request["ms"] > 0
    messages = [r["msg"] for r in records]
    assert "model ready" in messages and "stopped" in messages  # lifespan shutdown ran: batchers drained
    assert messages.index("stopped") > messages.index("request") and messages[-1].startswith("Finished server")


def test_log_format_flag_over_environment(monkeypatch):
    monkeypatch.delenv("O365ZOO_SERVE_LOG_FORMAT", raising=False)
    assert load_config().log_format == "auto"
    monkeypatch.setenv("O365ZOO_SERVE_LOG_FORMAT", "json")
    assert load_config().log_format == "json"
    args = vars(build_parser().parse_args(["--log-format", "text"]))
    assert load_config(**args).log_format == "text"
    monkeypatch.setenv("O365ZOO_SERVE_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError, match="O365ZOO_SERVE_LOG_FORMAT: Input should be 'auto', 'json' or 'text'"):
        load_config()


def test_server_on_a_terminal_logs_readable_lines_with_request_ids(photos):
    """stderr a pseudo-terminal, no flag: one text line per record, the request's id in its line."""
    import pty

    port, (master, slave) = free_port(), pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    env.pop("O365ZOO_SERVE_LOG_FORMAT", None)
    proc = subprocess.Popen([sys.executable, "-m", "serving", "--port", str(port), "--threads", "2"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the process closed the terminal
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url, lambda: b"".join(chunks).decode(errors="replace")[-3000:])
        response = httpx.post(f"{url}/v1/detect", content=encode(photos["chelsea"], "JPEG"),
                              headers={"x-request-id": "tty-test-1"}, timeout=60)
        assert response.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(timeout=10)
        os.close(master)
    lines = b"".join(chunks).decode().splitlines()
    assert lines and not any(line.lstrip().startswith("{") for line in lines), lines[:5]
    request = next(line for line in lines if "serving: request " in line and "request_id=tty-test-1" in line)
    assert "method=POST path=/v1/detect status=200 model=yolox_nano_coco" in request
    assert any("serving: model ready model=yolox_nano_coco" in line for line in lines)
    assert any(line.split()[1:3] == ["INFO", "serving:"] and line.endswith("stopped") for line in lines)


def test_settings_use_the_shared_vocabulary():
    """The runtime precisions a server accepts are zoo.vocabulary's (a Literal cannot name its constants)."""
    import typing

    from zoo.vocabulary import F32, RUNTIME_PRECISIONS, cache_root

    assert typing.get_args(ServingConfig.model_fields["precision"].annotation) == RUNTIME_PRECISIONS
    assert ServingConfig.model_fields["precision"].default == F32
    assert load_config().onnx_cache == cache_root() / "serving"
