"""Inference on a Triton Inference Server (tritonclient, HTTP or gRPC) holding ``python -m export.triton``'s
repository. Photos are decoded and letterboxed here, then sent as one ``images [B, 3, H, W]`` batch to the graph
model (``<name>_onnx`` when the server has it ready, else ``<name>_python``); an unreachable server is a 503."""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BackendUnavailable
from .base import Backend, ModelInfo, Result
from .exported import run_letterboxed, served_outputs

if TYPE_CHECKING:
    from ..config import ServingConfig

log = logging.getLogger("serving.triton")


class TritonBackend(Backend):
    """``info`` comes from the zoo registry (names, categories, thresholds); the input size and output layout from
    the server's model metadata, read on first use so the server may start after us."""

    in_process = False

    def __init__(self, info: ModelInfo, *, url: str, protocol: str = "http", model: str | None = None,
                 timeout_s: float = 30.0, max_batch_size: int = 8, pad_value: float = 0.0) -> None:
        if protocol not in ("http", "grpc"):
            raise ValueError(f"protocol must be http or grpc, not {protocol!r}")
        self.info = info
        self.url, self.protocol, self.timeout_s = url, protocol, timeout_s
        self.max_batch_size = max_batch_size
        self.pad_value = pad_value  # the letterbox fill of the model's preprocessing
        self._requested_model = model
        self._local = threading.local()  # tritonclient's HTTP client is bound to the thread that made it
        self._graph: tuple[str, tuple[int, int], list[str]] | None = None

    @property
    def _module(self):
        if self.protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        return module

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                client = self._module.InferenceServerClient(self.url)
            else:
                client = self._module.InferenceServerClient(self.url, connection_timeout=5.0,
                                                            network_timeout=self.timeout_s)
            self._local.client = client
        return client

    def _unavailable(self, exc: Exception) -> BackendUnavailable:
        self._local.client = None  # reconnect from scratch next time
        reason = getattr(exc, "message", None)
        reason = reason() if callable(reason) else reason
        return BackendUnavailable(f"Triton server at {self.url} ({self.protocol}) is unavailable: "
                                  f"{reason or exc or type(exc).__name__}", headers={"Retry-After": "5"})

    def _call(self, fn, *args, **kwargs):
        from tritonclient.utils import InferenceServerException

        try:
            return fn(self._client(), *args, **kwargs)
        except (InferenceServerException, OSError, ConnectionError, TimeoutError) as exc:
            raise self._unavailable(exc) from None

    def _resolve_graph(self) -> tuple[str, tuple[int, int], list[str]]:
        """(model name, input H x W, output names) of the graph model, from the server."""
        if self._graph is None:
            from export.contract import triton_name

            base = triton_name(self.info.name)
            candidates = [self._requested_model] if self._requested_model else [f"{base}_onnx", f"{base}_python"]
            name = next((c for c in candidates if self._call(lambda cl, m=c: cl.is_model_ready(m))), None)
            if name is None:
                raise BackendUnavailable(f"Triton server at {self.url} has none of the models "
                                         f"{', '.join(candidates)} ready", headers={"Retry-After": "5"})
            meta = self._call(lambda cl: cl.get_model_metadata(name))
            if not isinstance(meta, dict):  # gRPC returns a protobuf message
                from google.protobuf.json_format import MessageToDict

                meta = MessageToDict(meta, preserving_proto_field_name=True)
            shape = [int(d) for d in meta["inputs"][0]["shape"]]
            outputs = [o["name"] for o in meta["outputs"]]
            self._graph = (name, (shape[-2], shape[-1]), outputs)
            log.info("using Triton model", extra={"triton_model": name, "input": shape, "url": self.url})
        return self._graph

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        name, _, outputs = self._resolve_graph()
        module = self._module
        wanted = served_outputs(self.info.task)
        tensor = module.InferInput("images", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        requested = [module.InferRequestedOutput(o) for o in wanted if o in outputs]
        result = self._call(lambda cl: cl.infer(name, [tensor], outputs=requested))
        out = {o: result.as_numpy(o) for o in wanted}
        if "num_detections" in out:
            out["num_detections"] = out["num_detections"].reshape(-1)
        return out

    def infer(self, images: list[np.ndarray]) -> list[Result]:
        _, size, _ = self._resolve_graph()
        return run_letterboxed(self._run, images, size, self.info.task, self.pad_value)

    def warmup(self) -> None:
        try:
            super().warmup()
        except BackendUnavailable as exc:  # serve anyway: /readyz reports it, and we recover when it is back
            log.warning("warm-up skipped: %s", exc.message)

    def is_ready(self) -> bool:
        try:
            name, _, _ = self._resolve_graph()
            # model readiness, not the server's: a strict server is "not ready" while any other model failed
            return bool(self._call(lambda cl: cl.is_model_ready(name)))
        except BackendUnavailable:
            return False

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()

    @classmethod
    def from_config(cls, name: str, config: ServingConfig) -> TritonBackend:
        import zoo

        spec = zoo.get_spec(name)
        return cls(ModelInfo.from_spec(spec, backend="triton"), url=config.triton_url, protocol=config.triton_protocol,
                   model=config.triton_model, timeout_s=config.request_timeout_s,
                   max_batch_size=config.max_batch_size, pad_value=spec.preprocessing.pad_value)
