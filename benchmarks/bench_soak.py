"""Soak: the server under steady load, without and with hostile clients mixed in.

Two runs of ``--duration`` seconds, each against a fresh ``python -m serving`` (yolox_nano_coco on torch, the
server's default limits) on a loopback port: ``--concurrency`` keep-alive connections send POST /v1/detect with a
512x512 JPEG photo back to back; in the second run each request is, with probability ``--hostile``, replaced by a
hostile one of a random kind (below). Slow kinds run beside the connection's loop, which goes on at once, so the
normal load stays the same. Reports the normal requests' p50 and p99 latency (target: p99 within 2x of the plain
run's), answers by status for both kinds of request, the server's RSS after warm-up and at the end (and its peak),
and how many error lines the server logged. Prints a table and writes benchmarks/results/bench_soak.json.

    nice python benchmarks/bench_soak.py                      # 2 x 60 s at concurrency 64, 10% hostile
    nice python benchmarks/bench_soak.py --duration 20
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import struct
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _common import report  # noqa: E402
from bench_serving import Server, test_image  # noqa: E402

from serving.config import ServingConfig  # noqa: E402

HOST = "127.0.0.1"
SLOW_STEP_S = 1.0  # slow clients send a byte this often
LIMITS = ("queue_size", "request_timeout_s", "max_upload_bytes", "max_pixels", "max_connections", "header_timeout_s",
          "body_timeout_s", "keep_alive_s")  # the server's defaults, recorded with the results


def http_post(target: str, body: bytes, content_type: str = "image/jpeg", length: int | None = None) -> bytes:
    return (f"POST {target} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n\r\n").encode() + body


def png_declaring(width: int, height: int) -> bytes:
    """A PNG header declaring ``width`` x ``height`` RGB pixels, followed by a tiny data chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(1024))) + \
        chunk(b"IEND", b"")


def malformed_exif_jpeg(photo: bytes) -> bytes:
    """The photo with an EXIF block whose Compression tag (a SHORT) is ASCII text, and orientation 6."""
    tiff = b"MM\0*\0\0\0\x08\0\x02" + struct.pack(">HHI", 0x0103, 2, 6) + struct.pack(">I", 38) + \
        struct.pack(">HHI", 0x0112, 3, 1) + struct.pack(">HH", 6, 0) + b"\0\0\0\0Canon\0"
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photo)).save(buffer, format="JPEG", quality=90, exif=b"Exif\0\0" + tiff)
    return buffer.getvalue()


def hostile_requests(photo: bytes, rng: np.random.Generator) -> dict[str, bytes]:
    """The hostile requests sent whole, by kind."""
    big = io.BytesIO()
    Image.new("L", (6000, 6000)).save(big, format="PNG", optimize=True)  # 36 MP in 35 KB: under the pixel limit
    return {
        "pixel bomb, over the limit": http_post("/v1/detect", png_declaring(30000, 30000), "image/png"),
        "pixel bomb, under the limit": http_post("/v1/detect", big.getvalue(), "image/png"),
        "declared 50 MB": http_post("/v1/detect", b"", length=50 * 2**20),
        "random bytes": http_post("/v1/detect", rng.bytes(5000), "application/octet-stream"),
        "truncated JPEG": http_post("/v1/detect", photo[: len(photo) // 2]),
        "malformed EXIF": http_post("/v1/detect", malformed_exif_jpeg(photo)),
        "bad classes": http_post("/v1/detect?classes=%C2%B2," + "0" * 5000, photo),
    }


async def read_status(reader: asyncio.StreamReader) -> int:
    """One response's status, its body read (Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    await reader.readexactly(int(headers["content-length"]))
    return int(lines[0].split()[1])


async def send_whole(port: int, request: bytes) -> str:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(request)
        return str(await read_status(reader))
    except (ConnectionError, asyncio.IncompleteReadError):
        return "closed"
    finally:
        writer.close()


async def trickle(port: int, head: bytes, then: bytes) -> str:
    """Send ``head``, then ``then`` a byte every SLOW_STEP_S; the answer's status, or "closed" when the server
    closed the connection without one."""
    reader, writer = await asyncio.open_connection(HOST, port)
    answer = asyncio.create_task(read_status(reader))
    try:
        writer.write(head)
        for byte in then:
            done, _ = await asyncio.wait([answer], timeout=SLOW_STEP_S)
            if done:
                break
            writer.write(bytes([byte]))
        return str(await answer)
    except (ConnectionError, asyncio.IncompleteReadError):
        return "closed"
    finally:
        answer.cancel()
        writer.close()


def hostile_kinds(port: int, photo: bytes, rng: np.random.Generator) -> dict[str, Callable[[], Awaitable[str]]]:
    kinds: dict[str, Callable[[], Awaitable[str]]] = {
        name: (lambda r=request: send_whole(port, r)) for name, request in hostile_requests(photo, rng).items()}
    kinds["slow headers"] = lambda: trickle(port, b"POST /v1/detect HTTP/1.1\r\n", b"X" * 600)
    kinds["slow body"] = lambda: trickle(port, http_post("/v1/detect", b"", length=len(photo)), photo)
    return kinds


async def soak(port: int, photo: bytes, duration_s: float, concurrency: int, hostile: float, seed: int) -> dict:
    """``concurrency`` connections posting the photo for ``duration_s``, a ``hostile`` share replaced by hostile
    requests; normal latencies and statuses, hostile statuses by kind."""
    rng = np.random.default_rng(seed)
    kinds = hostile_kinds(port, photo, rng)
    names = sorted(kinds)
    request = http_post("/v1/detect", photo)
    latencies: list[float] = []  # of the normal requests answered 200
    normal: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = {name: Counter() for name in names}
    slow: set[asyncio.Task] = set()
    end = time.perf_counter() + duration_s

    async def hostile_one(name: str) -> None:
        by_kind[name][await kinds[name]()] += 1

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        while time.perf_counter() < end:
            if rng.random() < hostile:
                name = names[rng.integers(len(names))]
                if name.startswith("slow"):
                    task = asyncio.create_task(hostile_one(name))
                    slow.add(task)
                    task.add_done_callback(slow.discard)
                else:
                    await hostile_one(name)
                continue
            started = time.perf_counter()
            try:
                writer.write(request)
                status = str(await read_status(reader))
                if status == "200":
                    latencies.append(time.perf_counter() - started)
            except (ConnectionError, asyncio.IncompleteReadError):
                status = "closed"
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, port)
            normal[status] += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    unfinished = list(slow)  # slow clients still trickling at the end of the run
    for task in unfinished:
        task.cancel()
    await asyncio.gather(*unfinished, return_exceptions=True)
    return {
        "seconds": round(seconds, 1), "normal_statuses": dict(sorted(normal.items())),
        "throughput_per_s": round(normal["200"] / seconds, 2),
        "p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 1) if latencies else None,
        "hostile_statuses": {name: dict(sorted(c.items())) for name, c in by_kind.items() if c},
        "hostile_unfinished": len(unfinished),
    }


def rss_mb(pid: int) -> dict[str, float]:
    """The process's resident set now and at its peak, in MiB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {key: round(int(fields[key].split()[0]) / 1024, 1) for key in ("VmRSS", "VmHWM")}


def run(label: str, photo: bytes, args: argparse.Namespace, hostile: float) -> dict:
    print(f"[{label}] {args.duration:g} s at concurrency {args.concurrency}, {hostile:.0%} hostile", flush=True)
    with Server("yolox", "torch", args.threads, args.cache, request_timeout_s=30) as server:
        log: list[bytes] = []
        threading.Thread(target=lambda: log.extend(server.proc.stderr), daemon=True).start()  # never a full pipe
        asyncio.run(soak(server.port, photo, 3.0, args.concurrency, 0.0, args.seed))  # warm-up
        start = rss_mb(server.proc.pid)
        out = asyncio.run(soak(server.port, photo, args.duration, args.concurrency, hostile, args.seed))
        end = rss_mb(server.proc.pid)
        errors = sum(b'"level": "error"' in line for line in log)
    return {"run": label, "hostile": hostile, **out, "rss_start_mb": start["VmRSS"], "rss_end_mb": end["VmRSS"],
            "rss_peak_mb": end["VmHWM"], "server_error_logs": errors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of each run")
    parser.add_argument("--concurrency", type=int, default=64, help="client connections")
    parser.add_argument("--hostile", type=float, default=0.1, help="share of hostile requests in the second run")
    parser.add_argument("--threads", type=int, default=2, help="the server's torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "bench_serving",
                        help="the server's --onnx-cache (unused by torch)")
    args = parser.parse_args()
    photo = test_image("yolox", "jpeg")
    runs = [run("plain", photo, args, 0.0), run("hostile", photo, args, args.hostile)]
    ratio = runs[1]["p99_ms"] / runs[0]["p99_ms"] if runs[0]["p99_ms"] and runs[1]["p99_ms"] else None
    columns = ["run", "hostile", "throughput_per_s", "p50_ms", "p99_ms", "normal_statuses", "rss_start_mb",
               "rss_end_mb", "rss_peak_mb", "server_error_logs"]
    report("bench_soak", columns, [[r[c] for c in columns] for r in runs], extra={
        "settings": {"duration_s": args.duration, "concurrency": args.concurrency, "threads": args.threads,
                     "cpus": os.cpu_count(), "model": "yolox_nano_coco", "backend": "torch",
                     "image": "scikit-image astronaut, 512x512 JPEG q90", "seed": args.seed},
        "server_limits": {name: getattr(ServingConfig(), name) for name in LIMITS},
        "p99_ratio_hostile_vs_plain": round(ratio, 2) if ratio else None, "p99_target_ratio": 2.0,
        "hostile_statuses": runs[1]["hostile_statuses"], "hostile_unfinished_at_end": runs[1]["hostile_unfinished"],
        "runs": runs,
    })
    for name, statuses in runs[1]["hostile_statuses"].items():
        print(f"  hostile {name:<28} {statuses}")
    print(f"p99 hostile / plain: {ratio:.2f} (target: within 2x)" if ratio else "p99 ratio: n/a")
    return 0


if __name__ == "__main__":
    sys.exit(main())
