"""Serving throughput and latency over loopback HTTP against the same backend called directly in a loop.

For each model and backend: the backend's ``infer`` on one image in a loop (direct: on the decoded pixels, and
decoding the same bytes each time as a user's own loop over image files would), then a server process
(``python -m serving``) at concurrency 1, 4 and 16 with dynamic batching, the same at 16 with batch size 1, and a
small queue flooded to count 503 answers. Prints a table and writes benchmarks/results/bench_serving.json.
The load client writes prebuilt HTTP/1.1 requests over keep-alive connections from one asyncio loop, so that the
client, which shares the 2 cores with the server, costs next to nothing; the image is a JPEG (``--format``).

    nice python benchmarks/bench_serving.py                       # default + tree model + R50-FPN 512 px
    nice python benchmarks/bench_serving.py --models yolox --backends torch,onnxruntime,openvino
    nice python benchmarks/bench_serving.py --backends torch,onnxruntime,openvino-bf16,triton --requests 16

R50-FPN runs with random weights (the published checkpoint is a download): timing only, the detections are noise.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from zoo.atomic import atomic_write  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "bench_serving.json"
MODELS = {  # key: (zoo name, image size override, pretrained)
    "yolox": ("yolox_nano_coco", None, True),
    "demo": ("retinanet_lite0_neon_trees", None, True),
    "r50fpn_512": ("fpn_r50_obj365", 512, False),
}


def test_image(key: str, fmt: str) -> bytes:
    """The tree model gets a NEON tile (400x400); yolox_nano_coco scikit-image's astronaut (512x512); R50-FPN the
    astronaut resized to 512x512; encoded as ``fmt`` (JPEG at quality 90, as cameras and browsers send photos, or
    PNG)."""
    if key == "demo":
        from training.demo_data import ensure_demo_data

        image = Image.open(ensure_demo_data().image("OSBS_029")).convert("RGB")
    else:
        from skimage import data

        image = Image.fromarray(data.astronaut()).resize((512, 512))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt.upper(), **({"quality": 90} if fmt == "jpeg" else {}))
    return buffer.getvalue()


def split_backend(label: str) -> tuple[str, str]:
    """A benchmark backend label -> (serving backend, precision): ``openvino-bf16`` is OpenVINO in bfloat16."""
    backend, _, precision = label.partition("-")
    return backend, precision or "f32"


def summarise(latencies: list[float], seconds: float, statuses: list[int]) -> dict:
    ok = [lat for lat, status in zip(latencies, statuses) if status == 200]
    return {
        "requests": len(statuses),
        "ok": len(ok),
        "status_counts": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "throughput_per_s": round(len(ok) / seconds, 3) if seconds else None,
        "p50_ms": round(1000 * statistics.median(ok), 1) if ok else None,
        "p99_ms": round(1000 * float(np.percentile(ok, 99)), 1) if ok else None,
    }


def direct(key: str, backend_name: str, image: bytes, *, requests: int, threads: int, cache: Path,
           triton_url: str) -> dict:
    """The backend's own infer(), ``requests`` times in a loop after three warm-ups, on one image decoded once
    ("infer") and decoding its bytes each time ("decode+infer"): no HTTP, no batching."""
    import torch

    from serving.backends import create_backend
    from serving.config import ServingConfig
    from serving.limits import decode_image

    torch.set_num_threads(threads)
    name, size, pretrained = MODELS[key]
    backend_name, precision = split_backend(backend_name)
    config = ServingConfig(models=[name], backend=backend_name, precision=precision, image_size=size,
                           pretrained=pretrained, threads=threads, onnx_cache=cache, triton_url=triton_url,
                           request_timeout_s=600)
    backend = create_backend(name, config)
    pixels = decode_image(image, None, 10**8).pixels
    for _ in range(3):
        backend.infer([pixels])
    result = {}
    for mode, step in (("infer", lambda: backend.infer([pixels])),
                       ("decode+infer", lambda: backend.infer([decode_image(image, None, 10**8).pixels]))):
        latencies = []
        started = time.perf_counter()
        for _ in range(requests):
            t = time.perf_counter()
            step()
            latencies.append(time.perf_counter() - t)
        result[mode] = summarise(latencies, time.perf_counter() - started, [200] * requests)
    backend.close()
    return result


def child_env(threads: int) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}


def direct_in_child(key: str, backend: str, *, requests: int, threads: int, cache: Path, triton_url: str,
                    fmt: str) -> dict:
    """:func:`direct` in a fresh process set up like the server's, so both sides run under the same conditions."""
    job = json.dumps({"key": key, "backend": backend, "requests": requests, "threads": threads, "cache": str(cache),
                      "triton_url": triton_url, "format": fmt})
    done = subprocess.run([sys.executable, __file__, "--direct-worker", job], cwd=REPO, env=child_env(threads),
                          capture_output=True, text=True, timeout=3000, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"direct loop failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class Server:
    """``python -m serving`` in a child process on a free loopback port."""

    def __init__(self, key: str, backend: str, threads: int, cache: Path, **flags) -> None:
        name, size, pretrained = MODELS[key]
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        backend, precision = split_backend(backend)
        args = [sys.executable, "-m", "serving", "--model", name, "--backend", backend, "--precision", precision,
                "--port", str(self.port),
                "--threads", str(threads), "--onnx-cache", str(cache), "--log-level", "warning",
                "--score-threshold", "0.3", "--request-timeout-s", "600"]
        if size:
            args += ["--image-size", str(size)]
        if not pretrained:
            args.append("--random-weights")
        for flag, value in flags.items():
            args += [f"--{flag.replace('_', '-')}", str(value)]
        self.proc = subprocess.Popen(args, cwd=REPO, env=child_env(threads), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise RuntimeError("server not ready in 600 s")

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def _post_all(host: str, port: int, request: bytes, requests: int, concurrency: int
                    ) -> list[tuple[float, int, bool]]:
    """``requests`` copies of the prebuilt ``request`` over ``concurrency`` keep-alive connections: a load client
    that spends next to no CPU (it shares the 2 cores with the server), unlike a full HTTP client library."""
    pending = iter(range(requests))
    results: list[tuple[float, int, bool]] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for _ in pending:
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
                await reader.readexactly(int(headers["content-length"]))
                results.append((time.perf_counter() - started, int(lines[0].split()[1]), "retry-after" in headers))
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return results


def load(url: str, image: bytes, requests: int, concurrency: int, content_type: str) -> dict:
    """``requests`` POST /v1/detect over ``concurrency`` keep-alive connections (after one warm-up round)."""
    host, port = url.removeprefix("http://").split(":")
    request = (f"POST /v1/detect HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
               f"Content-Length: {len(image)}\r\n\r\n").encode() + image
    asyncio.run(_post_all(host, int(port), request, concurrency, concurrency))
    started = time.perf_counter()
    results = asyncio.run(_post_all(host, int(port), request, requests, concurrency))
    seconds = time.perf_counter() - started
    summary = summarise([r[0] for r in results], seconds, [r[1] for r in results])
    summary["retry_after_on_503"] = all(r[2] for r in results if r[1] == 503)
    return summary


def batch_sizes(url: str) -> dict:
    text = httpx.get(f"{url}/metrics").text
    count = sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("serving_batch_size_count"))
    total = sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("serving_batch_size_sum"))
    return {"batches": int(count), "mean_batch_size": round(total / count, 2) if count else None}


@contextmanager
def triton_server(key: str, cache: Path) -> Iterator[str]:
    """A tritonserver (tests/triton_utils.py: nvidia-pytriton's) on export.triton's repository of the model, built
    once into the cache at the same size and weights as the other backends; yields its HTTP address."""
    from export.triton import build_repository
    from serving.backends import load_zoo_model
    from serving.config import ServingConfig

    sys.path.insert(0, str(REPO / "tests"))
    from triton_utils import start_tritonserver

    name, size, pretrained = MODELS[key]
    repo = cache / f"triton-{key}"
    if not repo.is_dir():
        model = load_zoo_model(name, ServingConfig(models=[name], image_size=size, pretrained=pretrained))
        side = size or model.spec.preprocessing.min_size
        build_repository(model, repo, image_size=(side, side), parity=False, max_batch_size=8)
    with start_tritonserver(repo, timeout=300) as server:
        yield server.http_url


def run(key: str, backend: str, args: argparse.Namespace) -> dict:
    if backend == "triton":
        with triton_server(key, args.cache) as url:
            return measure(key, backend, args, url)
    return measure(key, backend, args, "")


def measure(key: str, backend: str, args: argparse.Namespace, triton_url: str) -> dict:
    image = test_image(key, args.format)
    ctype = f"image/{args.format}"
    n = max(8, args.requests // 2) if key == "r50fpn_512" else args.requests
    out: dict = {"model": MODELS[key][0], "backend": backend, "image_format": args.format,
                 "image_bytes": len(image), "timed_requests": n,
                 "max_wait_ms": args.max_wait_ms,
                 "image_size": MODELS[key][1], "pretrained": MODELS[key][2], "threads": args.threads}
    print(f"[{key} / {backend}] direct loop", flush=True)
    out["direct"] = direct_in_child(key, backend, requests=n, threads=args.threads, cache=args.cache,
                                    triton_url=triton_url, fmt=args.format)
    flags = {"triton_url": triton_url} if triton_url else {}
    out["http"] = {}
    with Server(key, backend, args.threads, args.cache, max_batch_size=8, max_wait_ms=args.max_wait_ms,
                queue_size=64, **flags) as server:
        for c in args.concurrency:
            print(f"[{key} / {backend}] HTTP concurrency {c}", flush=True)
            before = batch_sizes(server.url)["batches"]
            out["http"][str(c)] = load(server.url, image, max(n, c), c, ctype)
            after = batch_sizes(server.url)
            out["http"][str(c)]["batches_during_run"] = after["batches"] - before
    top = str(max(args.concurrency))
    print(f"[{key} / {backend}] HTTP concurrency {top}, batch size 1", flush=True)
    with Server(key, backend, args.threads, args.cache, max_batch_size=1, queue_size=64, **flags) as server:
        out["http_batch1"] = load(server.url, image, max(n, int(top)), int(top), ctype)
    print(f"[{key} / {backend}] queue flood (queue 2, 24 clients)", flush=True)
    with Server(key, backend, args.threads, args.cache, max_batch_size=1, queue_size=2, **flags) as server:
        out["queue_full"] = load(server.url, image, 24, 24, ctype)
    h1 = out["http"][str(min(args.concurrency))]["throughput_per_s"]
    out["http_overhead_pct"] = {mode: round(100 * (1 - h1 / d["throughput_per_s"]), 1)
                                for mode, d in out["direct"].items()}
    hb, b1 = out["http"][top]["throughput_per_s"], out["http_batch1"]["throughput_per_s"]
    out["batching_speedup_at_top"] = round(hb / b1, 3) if hb and b1 else None
    return out


def table(rows: list[dict]) -> str:
    lines = [f"{'model':<28} {'backend':<14} {'mode':<20} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'statuses':<18}"]
    for r in rows:
        modes = [(f"direct {m}", v) for m, v in r["direct"].items()] + \
                [(f"http c={c}", v) for c, v in r["http"].items()] + \
                [("http c=16 b=1", r["http_batch1"]), ("queue flood", r["queue_full"])]
        for mode, v in modes:
            lines.append(f"{r['model']:<28} {r['backend']:<14} {mode:<20} {v['throughput_per_s'] or 0:>7.2f} "
                         f"{v['p50_ms'] or 0:>8.1f} {v['p99_ms'] or 0:>8.1f} {json.dumps(v['status_counts']):<18}")
        overhead = ", ".join(f"{pct}% vs {mode}" for mode, pct in r["http_overhead_pct"].items())
        lines.append(f"{'':<28} {'':<14} HTTP overhead at c=1: {overhead}; dynamic batching vs batch-1 at "
                     f"c=16: x{r['batching_speedup_at_top']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="yolox,demo,r50fpn_512", help=f"comma-separated of {', '.join(MODELS)}")
    parser.add_argument("--backends", default="torch,onnxruntime", help="comma-separated of torch, onnxruntime, "
                                                                        "openvino, openvino-bf16, triton")
    parser.add_argument("--requests", type=int, default=16, help="timed requests per setting (R50: half)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--threads", type=int, default=2, help="torch / onnxruntime intra-op threads")
    parser.add_argument("--max-wait-ms", type=float, default=0.0, help="the batching server's --max-wait-ms")
    parser.add_argument("--format", choices=["jpeg", "png"], default="jpeg", help="how the test image is encoded")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "bench_serving",
                        help="ONNX export cache of the onnxruntime backend")
    parser.add_argument("--direct-worker", metavar="JOB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.direct_worker:
        job = json.loads(args.direct_worker)
        print(json.dumps(direct(job["key"], job["backend"], test_image(job["key"], job["format"]),
                                requests=job["requests"], threads=job["threads"], cache=Path(job["cache"]),
                                triton_url=job["triton_url"])))
        return 0
    rows = []
    for key in args.models.split(","):
        for backend in args.backends.split(","):
            rows.append(run(key, backend, args))
    print(table(rows))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["model"], r["backend"]) for r in rows}
    earlier = json.loads(RESULTS.read_text())["results"] if RESULTS.is_file() else []
    rows = [r for r in earlier if (r["model"], r["backend"]) not in done] + rows  # runs of other settings kept
    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "threads": args.threads},
              "settings": {"requests": args.requests, "concurrency": args.concurrency}, "results": rows}
    with atomic_write(RESULTS, "w") as f:
        f.write(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
