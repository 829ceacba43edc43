"""The cloud server: one split's cloud part behind the Open Inference Protocol (KServe v2 REST).

Implements health, server and model metadata, and inference with JSON tensors
and the binary tensor data extension. Every request is treated as hostile:
sizes are capped before reading, datatype and per-sample shape are checked
against the manifest, NaN/Inf are rejected, nothing is ever unpickled, and
every rejection is a 4xx with a JSON ``{"error": ...}``. Logs carry no
tensor contents.
"""

from __future__ import annotations

import hmac
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamix_cli.serving.oip import (
    HEADER_LENGTH, RequestError, decompress_body, encode_response, parse_body, parse_input, wants_binary,
)
from datamix_cli.serving.platforms import PLATFORMS
from datamix_cli.protocol.codecs import CODECS, Codec, spec_codec
from datamix_cli.protocol.mixing import PROTOCOL_VERSION
from datamix_cli import __version__

log = logging.getLogger("datamix.serve")

DEFAULT_MAX_BATCH = 256
JSON_OVERHEAD = 1 << 16  # room for the JSON part of a request beside the tensor itself
EXEMPT_FROM_TOKEN = ("/v2/health/live", "/v2/health/ready")


@dataclass(frozen=True)
class ServeConfig:
    folder: Path
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    format: str = "torchscript"  # which cloud artifact to serve: a key of PLATFORMS the split has


@dataclass(frozen=True)
class CloudModel:
    """The loaded cloud part and the tensor contract from the manifest."""

    name: str
    run: object
    input_name: str
    input_shape: tuple[int, ...]  # per sample
    output_name: str
    output_shape: tuple[int, ...]
    max_batch: int
    platform: str = "pytorch_libtorch"
    codec: Codec = CODECS["fp32"]  # how the uplink arrives (decoded before the cloud part)
    downlink_codec: Codec = CODECS["fp32"]  # how the cloud outputs leave

    @property
    def sample_bytes(self) -> int:
        return self.codec.bytes_per_sample(int(np.prod(self.input_shape)))

    def metadata_inputs(self) -> list[dict]:
        """The request's tensors as model metadata lists them: the payload, and the int8 codec's parameters."""
        inputs = [{"name": self.input_name, "datatype": self.codec.datatype, "shape": [-1, *self.input_shape]}]
        if self.codec.params:
            inputs.append({"name": self.codec.params_name(self.input_name), "datatype": "FP32", "shape": [-1, self.codec.params]})
        return inputs

    @property
    def max_body(self) -> int:
        # JSON text of a float takes at most ~25 bytes; binary takes 4.
        return self.max_batch * self.sample_bytes * 7 + JSON_OVERHEAD


def load_cloud(folder: Path, max_batch: int, fmt: str = "torchscript") -> CloudModel:
    """Load only the manifest and the cloud artifact in format ``fmt``, sha256-verified."""
    from datamix_cli.artifacts.folder import SplitFolder
    from datamix_cli.errors import ConfigError

    if max_batch < 1:
        raise ConfigError(f"--max-batch must be >= 1, got {max_batch}")
    parts = SplitFolder(folder, roles=("cloud",))
    manifest = parts.manifest
    run = parts.runner("cloud", fmt)
    up, down = manifest.split["uplink"], manifest.split["downlink"]
    return CloudModel(
        manifest.model["name"], run, up["name"], tuple(up["shape"][1:]), down["name"], tuple(down["shape"][1:]), max_batch,
        PLATFORMS.get(fmt, fmt), spec_codec(up), spec_codec(down),
    )


def _error(status: int, message: str):
    from starlette.responses import JSONResponse

    # After 413 the rest of the body is unread: closing the connection stops the server draining it.
    headers = {"Connection": "close"} if status == 413 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def build_app(model: CloudModel, token: str | None = None):
    """The ASGI app serving ``model``."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    metadata = {
        "name": model.name,
        "versions": ["1"],
        "platform": model.platform,
        "inputs": model.metadata_inputs(),
        "outputs": [{"name": model.output_name, "datatype": model.downlink_codec.datatype, "shape": [-1, *model.output_shape]}],
        "parameters": {"datamix_protocol": PROTOCOL_VERSION},
    }

    def check_model(request: Request) -> None:
        if request.path_params["name"] != model.name:
            raise RequestError(404, f"unknown model {request.path_params['name'][:64]!r}")
        version = request.path_params.get("version")
        if version is not None and version != "1":
            raise RequestError(404, f"unknown version {version[:16]!r} of model {model.name!r}")

    async def live(request):
        return JSONResponse({"live": True})

    async def ready(request):
        return JSONResponse({"ready": True})

    async def server_metadata(request):
        return JSONResponse({"name": "datamix", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def model_metadata(request):
        check_model(request)
        return JSONResponse(metadata)

    async def model_ready(request):
        check_model(request)
        return JSONResponse({"name": model.name, "ready": True})

    async def infer(request: Request):
        check_model(request)
        body = decompress_body(await _read_capped(request, model.max_body), request.headers.get("content-encoding"), model.max_body)
        parsed, binary = parse_body(body, request.headers.get(HEADER_LENGTH))
        array = parse_input(model, parsed, binary)
        binary_out = wants_binary(model, parsed)
        started = time.perf_counter()
        result = np.ascontiguousarray(await run_in_threadpool(model.run, array), dtype="<f4")
        cloud_ms = (time.perf_counter() - started) * 1e3
        body, header_length = encode_response(model.name, model.output_name, result, {"cloud_ms": cloud_ms}, parsed.get("id"), binary_out,
                                             model.downlink_codec)
        if header_length is None:
            return Response(body, media_type="application/json")
        return Response(body, media_type="application/octet-stream", headers={"Inference-Header-Content-Length": str(header_length)})

    routes = [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        Route("/v2/models/{name}", model_metadata),
        Route("/v2/models/{name}/versions/{version}", model_metadata),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
    ]

    async def request_error(request, exc: RequestError):
        log.info("rejected %s %s: %s", request.method, request.url.path, exc)
        return _error(exc.status, str(exc))

    async def http_error(request, exc):
        return _error(exc.status_code, exc.detail if isinstance(exc.detail, str) else "request refused")

    from starlette.exceptions import HTTPException

    app = Starlette(routes=routes, exception_handlers={RequestError: request_error, HTTPException: http_error})
    return _TokenGuard(app, token) if token else app


async def _read_capped(request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise RequestError(413, f"request body of {declared} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _TokenGuard:
    """ASGI middleware: bearer token on every path but the health probes."""

    def __init__(self, app, token: str):
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in EXEMPT_FROM_TOKEN:
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await _error(401, "missing or wrong bearer token")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(config: ServeConfig) -> None:
    """Run the server until SIGINT/SIGTERM; in-flight requests finish first."""
    from datamix_cli.errors import ConfigError, require

    if not is_loopback(config.host) and not config.token:
        raise ConfigError(f"binding to {config.host} exposes the server beyond this machine: pass --token to require a bearer token")
    require("starlette", "serve")
    uvicorn = require("uvicorn", "serve")
    model = load_cloud(config.folder, config.max_batch, config.format)
    app = build_app(model, config.token)
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal to the previous handler:
    # make that handler a clean exit, so a supervisor sees status 0 after a graceful shutdown.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", timeout_graceful_shutdown=30)

