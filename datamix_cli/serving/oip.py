"""The Open Inference Protocol (KServe v2 REST) on the wire, for both ends: requests and responses with JSON
tensors or the binary tensor data extension. The server half treats every request as hostile (sizes, datatype,
shape and values checked, NaN/Inf refused, nothing unpickled); the client half is what ``datamix infer`` sends."""

from __future__ import annotations

import json

import numpy as np

HEADER_LENGTH = "inference-header-content-length"
MAX_JSON_HEADER = 1 << 20


class RequestError(Exception):
    """A request the server refuses, with the HTTP status to refuse it with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_body(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
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


def flatten_numbers(data, expected: int) -> np.ndarray:
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


def parse_input(model, request: dict, binary: bytes) -> np.ndarray:
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
        array = flatten_numbers(tensor["data"], count)
        if array.size != count:
            raise RequestError(400, f"input data has {array.size} elements, shape {shape} needs {count}")
    if not np.isfinite(array).all():
        raise RequestError(400, "input contains NaN or Inf")
    return array.reshape(shape)


def wants_binary(model, request: dict) -> bool:
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


def encode_response(model_name: str, output_name: str, result: np.ndarray, parameters: dict, request_id, binary: bool) -> tuple[bytes, int | None]:
    """An inference response body for one FP32 output, and the JSON header's length when the tensor is binary."""
    result = np.ascontiguousarray(result, dtype="<f4")
    output = {"name": output_name, "datatype": "FP32", "shape": list(result.shape)}
    response = {"model_name": model_name, "model_version": "1", "outputs": [output], "parameters": parameters}
    if isinstance(request_id, str) and len(request_id) <= 256:
        response["id"] = request_id
    if not binary:
        output["data"] = result.ravel().tolist()
        return json.dumps(response, allow_nan=False).encode(), None
    raw = result.tobytes()
    output["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps(response).encode()
    return header + raw, len(header)


def encode_request(input_name: str, output_name: str, array: np.ndarray) -> tuple[bytes, dict]:
    """A binary inference request for one FP32 input asking for a binary output: (body, headers)."""
    raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [{"name": input_name, "shape": list(array.shape), "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}],
            "outputs": [{"name": output_name, "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}


def decode_response(data: bytes, header_length: str | None) -> tuple[np.ndarray, dict]:
    """The first output of an inference response (JSON or binary) and the response's JSON part.

    Raises ValueError when the output is not FP32 (the client reports it as a server error)."""
    n = int(header_length) if header_length is not None else len(data)
    meta = json.loads(data[:n])
    output = meta["outputs"][0]
    if output.get("datatype") != "FP32":
        raise ValueError(f"server returned datatype {output.get('datatype')}, expected FP32")
    if "parameters" in output and "binary_data_size" in output["parameters"]:
        result = np.frombuffer(data[n : n + output["parameters"]["binary_data_size"]], dtype="<f4")
    else:
        result = np.asarray(output["data"], dtype=np.float32)
    return result.reshape(output["shape"]), meta
