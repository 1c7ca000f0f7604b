"""Server settings: defaults, overridden by ``O365ZOO_SERVE_*`` environment variables, overridden by CLI flags."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from zoo.specs import DEFAULT_MODEL  # the embedded default (weights in the package): one home, the registry

BACKENDS = ("torch", "onnxruntime", "openvino", "triton")
LOG_FORMATS = ("auto", "json", "text")
ENV_PREFIX = "O365ZOO_SERVE_"


def _default_cache() -> Path:
    return Path(os.environ.get("O365ZOO_CACHE", Path.home() / ".cache" / "objects365-zoo")) / "serving"


@dataclass
class ServingConfig:
    """Every setting of the server; ``field.metadata["help"]`` documents each for the CLI."""

    models: list[str] = field(default_factory=lambda: [DEFAULT_MODEL],
                              metadata={"help": "zoo model names to serve; the first is the default"})
    backend: str = field(default="torch", metadata={"help": f"inference backend: {', '.join(BACKENDS)}"})
    device: str = field(default="cpu", metadata={"help": "torch / onnxruntime device: cpu, cuda, cuda:1"})
    pretrained: bool = field(default=True, metadata={"help": "load published weights (off: random weights, for "
                                                             "benchmarks and tests)"})
    image_size: int | None = field(default=None, metadata={"help": "every backend letterboxes photos into this "
                                                                   "square (default: the model's input size, e.g. "
                                                                   "416 for yolox_nano_coco, 800 for R50-FPN)"})
    onnx: Path | None = field(default=None, metadata={"help": "onnxruntime / openvino: serve this exported "
                                                              "model.onnx instead of exporting the model on first "
                                                              "use"})
    onnx_cache: Path = field(default_factory=_default_cache,
                             metadata={"help": "onnxruntime / openvino: folder for models exported on first use"})
    triton_url: str = field(default="127.0.0.1:8000", metadata={"help": "triton: server address host:port"})
    triton_protocol: str = field(default="http", metadata={"help": "triton: http or grpc"})
    triton_model: str | None = field(default=None, metadata={"help": "triton: the graph model to call (default: "
                                                                     "<name>_onnx if ready, else <name>_python)"})
    max_batch_size: int = field(default=8, metadata={"help": "images per inference batch, at most"})
    max_wait_ms: float = field(default=0.0, metadata={"help": "how long a batch waits to fill after its first image "
                                                              "(0: it takes what queued while the worker was busy)"})
    queue_size: int = field(default=64, metadata={"help": "requests waiting per model before 503 + Retry-After"})
    request_timeout_s: float = field(default=30.0, metadata={"help": "per-request limit for decoding + queue + "
                                                                    "inference (504)"})
    max_upload_bytes: int = field(default=20 * 1024 * 1024, metadata={"help": "largest accepted upload (413)"})
    max_pixels: int = field(default=40_000_000, metadata={"help": "largest decoded image, width x height (413)"})
    score_threshold: float = field(default=0.3, metadata={"help": "default score threshold of a request"})
    precision: str = field(default="f32", metadata={"help": "openvino: f32, or bf16 on CPUs with native bfloat16 "
                                                            "(AVX512-BF16, AMX): about 2x faster, parity held to "
                                                            "export.parity.BF16_TOLERANCE"})
    threads: int | None = field(default=None, metadata={"help": "torch / onnxruntime / openvino intra-op threads"})
    streams: int | None = field(default=None, metadata={"help": "torch on CPU: a batch of several images runs as "
                                                                "this many single-threaded streams side by side "
                                                                "(default: the CPU count; 1: one multi-threaded "
                                                                "forward per batch)"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind"})
    port: int = field(default=8080, metadata={"help": "port to bind"})
    log_level: str = field(default="info", metadata={"help": "debug, info, warning, error"})
    log_format: str = field(default="auto", metadata={"help": "json (one object per line), text, or auto: text "
                                                              "when stderr is a terminal, else JSON"})
    shutdown_timeout_s: float = field(default=15.0, metadata={"help": "grace period for in-flight requests on "
                                                                      "SIGTERM/SIGINT"})
    max_connections: int = field(default=512, metadata={"help": "open connections (and requests in progress) at "
                                                                "once; past it a request gets a plain-text 503"})
    header_timeout_s: float = field(default=20.0, metadata={"help": "a request's headers must arrive within this "
                                                                    "(from its first byte, or the connection's "
                                                                    "opening), else the connection is closed"})
    body_timeout_s: float = field(default=60.0, metadata={"help": "an upload must arrive within this after its "
                                                                  "headers (408, then the connection is closed)"})
    keep_alive_s: int = field(default=15, metadata={"help": "an idle keep-alive connection is closed after this"})

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.precision not in ("f32", "bf16"):
            raise ValueError(f"precision must be f32 or bf16, not {self.precision!r}")
        if self.precision != "f32" and self.backend != "openvino":
            raise ValueError("precision bf16 needs the openvino backend")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {self.log_format!r}")
        if self.triton_protocol not in ("http", "grpc"):
            raise ValueError(f"triton protocol must be http or grpc, not {self.triton_protocol!r}")
        if not self.models:
            raise ValueError("at least one model must be served")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score threshold must be in [0, 1], not {self.score_threshold}")
        if self.streams is not None and self.streams < 1:
            raise ValueError("streams must be at least 1")
        for name in ("max_batch_size", "queue_size", "max_upload_bytes", "max_pixels", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> ServingConfig:
        """Defaults, then ``O365ZOO_SERVE_<FIELD>`` variables (``MODELS`` comma-separated), then ``overrides``."""
        environ = os.environ if environ is None else environ
        values: dict = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _parse(name: str, raw: str):
    kind = {f.name: f.type for f in fields(ServingConfig)}[name]
    try:
        if name == "models":
            return [m.strip() for m in raw.split(",") if m.strip()]
        if kind == "bool":
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if kind in ("int", "int | None"):
            return int(raw)
        if kind in ("float", "float | None"):
            return float(raw)
        if kind in ("Path", "Path | None"):
            return Path(raw)
        return raw
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from None
