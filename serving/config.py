"""Server settings, one home: defaults, overridden by ``O365ZOO_SERVE_*`` environment variables, overridden by CLI
flags (:mod:`serving.cli` makes its flags from these fields). ``MODELS`` is comma-separated."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from zoo.specs import DEFAULT_MODEL  # the embedded default (weights in the package): one home, the registry
from zoo.vocabulary import F32, cache_root

ENV_PREFIX = "O365ZOO_SERVE_"
Backend = Literal["torch", "onnxruntime", "openvino", "triton"]
LogFormat = Literal["auto", "json", "text"]


@dataclass(frozen=True)
class Flag:
    """A setting's command-line flag when it is not ``--<field-name> VALUE``: another ``name`` (a list setting's
    flag is repeated, once per item), or a switch that stores ``const`` and takes no value."""

    name: str
    const: Any = None
    metavar: str | None = None


class SettingsError(ValueError):
    """An invalid setting, in one line naming its flag and environment variable."""


def _default_cache() -> Path:
    return cache_root() / "serving"


class ServingConfig(BaseSettings):
    """Every setting of the server; each field's description is its ``--help`` text."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    models: Annotated[list[str], NoDecode, Flag("--model", metavar="NAME")] = Field(
        default_factory=lambda: [DEFAULT_MODEL], min_length=1,
        description="zoo model names to serve; the first is the default; repeat the flag to serve several")
    backend: Backend = Field(default="torch", description="inference backend")
    device: str = Field(default="cpu", description="torch / onnxruntime device: cpu, cuda, cuda:1")
    pretrained: Annotated[bool, Flag("--random-weights", const=False)] = Field(
        default=True, description="load published weights; --random-weights: randomly initialised models "
                                  "(benchmarks and tests: no download)")
    image_size: int | None = Field(
        default=None, ge=1, description="every backend letterboxes photos into this square (default: the model's "
                                        "input size, e.g. 416 for yolox_nano_coco, 800 for R50-FPN)")
    onnx: Path | None = Field(default=None, description="onnxruntime / openvino: serve this exported model.onnx "
                                                        "instead of exporting the model on first use")
    onnx_cache: Path = Field(default_factory=_default_cache,
                             description="onnxruntime / openvino: folder for models exported on first use")
    triton_url: str = Field(default="127.0.0.1:8000", description="triton: server address host:port")
    triton_protocol: Literal["http", "grpc"] = Field(default="http", description="triton: protocol")
    triton_model: str | None = Field(default=None, description="triton: the graph model to call (default: "
                                                               "<name>_onnx if ready, else <name>_python)")
    max_batch_size: int = Field(default=8, ge=1, description="images per inference batch, at most")
    max_wait_ms: float = Field(default=0.0, ge=0, description="how long a batch waits to fill after its first image "
                                                              "(0: it takes what queued while the worker was busy)")
    queue_size: int = Field(default=64, ge=1, description="requests waiting per model before 503 + Retry-After")
    request_timeout_s: float = Field(default=30.0, gt=0, description="per-request limit for decoding + queue + "
                                                                     "inference (504)")
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1, description="largest accepted upload (413)")
    max_pixels: int = Field(default=40_000_000, ge=1, description="largest decoded image, width x height (413)")
    score_threshold: float = Field(default=0.3, ge=0.0, le=1.0, description="default score threshold of a request")
    precision: Literal["f32", "bf16"] = Field(  # zoo.vocabulary.RUNTIME_PRECISIONS (a test holds them equal)
        default=F32, description="openvino: f32, or bf16 on CPUs with native bfloat16 (AVX512-BF16, AMX): about "
                                 "2x faster, parity held to export.parity.BF16_TOLERANCE")
    threads: int | None = Field(default=None, ge=1, description="torch / onnxruntime / openvino intra-op threads")
    streams: int | None = Field(
        default=None, ge=1, description="torch on CPU: a batch of several images runs as this many single-threaded "
                                        "streams side by side (default: the CPU count; 1: one multi-threaded "
                                        "forward per batch)")
    host: str = Field(default="127.0.0.1", description="address to bind")
    port: int = Field(default=8080, ge=0, le=65535, description="port to bind")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(default="info",
                                                                                description="log level")
    log_format: LogFormat = Field(default="auto", description="json (one object per line), text, or auto: text "
                                                              "when stderr is a terminal, else JSON")
    shutdown_timeout_s: float = Field(default=15.0, ge=0, description="grace period for in-flight requests on "
                                                                      "SIGTERM/SIGINT")
    max_connections: int = Field(default=512, ge=1, description="open connections (and requests in progress) at "
                                                                "once; past it a request gets a plain-text 503")
    header_timeout_s: float = Field(
        default=20.0, gt=0, description="a request's headers must arrive within this (from its first byte, or the "
                                        "connection's opening), else the connection is closed")
    body_timeout_s: float = Field(default=60.0, gt=0, description="an upload must arrive within this after its "
                                                                  "headers (408, then the connection is closed)")
    keep_alive_s: int = Field(default=15, gt=0, description="an idle keep-alive connection is closed after this")

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        return [m.strip() for m in value.split(",") if m.strip()] if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _bf16_needs_openvino(self) -> ServingConfig:
        if self.precision != F32 and self.backend != "openvino":
            raise ValueError("precision bf16 needs the openvino backend")
        return self


def env_var(field: str) -> str:
    """The environment variable of setting ``field``."""
    return ENV_PREFIX + field.upper()


def flag_of(field: str) -> Flag:
    """The command-line flag of setting ``field``."""
    extra = next((m for m in ServingConfig.model_fields[field].metadata if isinstance(m, Flag)), None)
    return extra or Flag("--" + field.replace("_", "-"))


def load_config(**overrides: Any) -> ServingConfig:
    """Defaults, then ``O365ZOO_SERVE_*`` variables, then ``overrides`` (None: not given); an invalid value raises
    :class:`SettingsError` naming the flag and variable that set it."""
    try:
        return ServingConfig(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    """One line for every error of a settings validation: ``--flag / VARIABLE: problem (got VALUE)``."""
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else None
        message = error["msg"].removeprefix("Value error, ")
        if field in ServingConfig.model_fields:
            parts.append(f"{flag_of(field).name} / {env_var(field)}: {message} (got {error['input']!r})")
        else:
            parts.append(f"{field}: {message}" if field else message)
    return "invalid setting: " + "; ".join(parts)
