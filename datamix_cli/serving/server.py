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
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamix_cli.serving.platforms import PLATFORMS
from datamix_cli import __version__

log = logging.getLogger("datamix.serve")

HEADER_LENGTH = "inference-header-content-length"
DEFAULT_MAX_BATCH = 256
JSON_OVERHEAD = 1 << 16  # room for the JSON part of a request beside the tensor itself
MAX_JSON_HEADER = 1 << 20
EXEMPT_FROM_TOKEN = ("/v2/health/live", "/v2/health/ready")
# The "platform" model metadata reports for each cloud format (the names Triton uses where it has one).


@dataclass(frozen=True)
class ServeConfig:
    folder: Path
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    format: str = "torchscript"  # which cloud artifact to serve: a key of PLATFORMS the split has


class RequestError(Exception):
    """A request the server refuses, with the HTTP status to refuse it with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


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

    @property
    def sample_bytes(self) -> int:
        return int(np.prod(self.input_shape)) * 4

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
        manifest.model["name"], run, up["name"], tuple(up["shape"][1:]), down["name"], tuple(down["shape"][1:]), max_batch, PLATFORMS.get(fmt, fmt)
    )


def _error(status: int, message: str):
    from starlette.responses import JSONResponse

    # After 413 the rest of the body is unread: closing the connection stops the server draining it.
    headers = {"Connection": "close"} if status == 413 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _parse_body(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise RequestError(400, "Inference-Header-Content-Length is not an integer") from None
        if not 0 <= n <= len(body) or n > MAX_JSON_HEADER:
            raise RequestError(400, f"Inference-Header-Content-Length {n} does not fit a body of {len(body)} bytes")
        text, binary = body[:n], body[n:]
    else:
        text, binary = body, b""
    try:
        request = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RequestError(400, f"request is not valid JSON: {type(exc).__name__}") from None
    if not isinstance(request, dict):
        raise RequestError(400, "request must be a JSON object")
    return request, binary


def _flatten_numbers(data, expected: int) -> np.ndarray:
    """JSON data (flat or nested lists of numbers) -> float32, without trusting its structure."""
    flat, stack = [], [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            flat.append(item)
        else:
            raise RequestError(400, "input data must be numbers (nested lists allowed)")
        if len(flat) > expected:
            raise RequestError(400, "input data has more elements than its shape")
    try:
        with np.errstate(over="ignore"):  # out-of-range values become Inf and are rejected as such
            return np.asarray(flat, dtype=np.float32)
    except OverflowError:
        raise RequestError(400, "input data holds numbers out of float32 range") from None


def parse_input(model: CloudModel, request: dict, binary: bytes) -> np.ndarray:
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise RequestError(400, f"request must have exactly one input, {model.input_name!r}")
    tensor = inputs[0]
    if tensor.get("name") != model.input_name:
        raise RequestError(400, f"unknown input {str(tensor.get('name'))[:64]!r}; expected {model.input_name!r}")
    if tensor.get("datatype") != "FP32":
        raise RequestError(400, f"input datatype must be FP32, got {str(tensor.get('datatype'))[:16]!r}")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise RequestError(400, "input shape must be a list of integers")
    if tuple(shape[1:]) != model.input_shape or len(shape) != len(model.input_shape) + 1:
        raise RequestError(400, f"input shape {shape[:8]} does not match [batch, {', '.join(map(str, model.input_shape))}]")
    batch = shape[0]
    if not 1 <= batch <= model.max_batch:
        raise RequestError(400, f"batch {batch} outside 1..{model.max_batch}")
    count = batch * int(np.prod(model.input_shape))
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError(400, "input parameters must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size != count * 4:
            raise RequestError(400, f"binary_data_size must be {count * 4} for shape {shape}")
        if len(binary) != size:
            raise RequestError(400, f"binary section holds {len(binary)} bytes, binary_data_size says {size}")
        array = np.frombuffer(binary, dtype="<f4").astype(np.float32)
    else:
        if binary:
            raise RequestError(400, "binary data present but no input declares binary_data_size")
        if "data" not in tensor:
            raise RequestError(400, "input has neither data nor binary_data_size")
        array = _flatten_numbers(tensor["data"], count)
        if array.size != count:
            raise RequestError(400, f"input data has {array.size} elements, shape {shape} needs {count}")
    if not np.isfinite(array).all():
        raise RequestError(400, "input contains NaN or Inf")
    return array.reshape(shape)


def _wants_binary(model: CloudModel, request: dict) -> bool:
    params = request.get("parameters") or {}
    binary = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    outputs = request.get("outputs")
    if outputs is None:
        return binary
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise RequestError(400, "outputs must be a list of objects")
    for output in outputs:
        if output.get("name") != model.output_name:
            raise RequestError(400, f"unknown output {str(output.get('name'))[:64]!r}; the model has {model.output_name!r}")
        p = output.get("parameters") or {}
        if isinstance(p, dict) and "binary_data" in p:
            binary = bool(p["binary_data"])
    return binary


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
        "inputs": [{"name": model.input_name, "datatype": "FP32", "shape": [-1, *model.input_shape]}],
        "outputs": [{"name": model.output_name, "datatype": "FP32", "shape": [-1, *model.output_shape]}],
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
        body = await _read_capped(request, model.max_body)
        parsed, binary = _parse_body(body, request.headers.get(HEADER_LENGTH))
        array = parse_input(model, parsed, binary)
        binary_out = _wants_binary(model, parsed)
        started = time.perf_counter()
        result = np.ascontiguousarray(await run_in_threadpool(model.run, array), dtype="<f4")
        cloud_ms = (time.perf_counter() - started) * 1e3
        output = {"name": model.output_name, "datatype": "FP32", "shape": list(result.shape)}
        response = {"model_name": model.name, "model_version": "1", "outputs": [output], "parameters": {"cloud_ms": cloud_ms}}
        request_id = parsed.get("id")
        if isinstance(request_id, str) and len(request_id) <= 256:
            response["id"] = request_id
        if not binary_out:
            output["data"] = result.ravel().tolist()
            return JSONResponse(response)
        raw = result.tobytes()
        output["parameters"] = {"binary_data_size": len(raw)}
        header = json.dumps(response).encode()
        return Response(
            header + raw,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(header))},
        )

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

