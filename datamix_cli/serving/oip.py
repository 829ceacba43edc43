"""The Open Inference Protocol (KServe v2 REST) on the wire, for both ends: requests and responses with JSON
tensors or the binary tensor data extension. The server half treats every request as hostile (sizes, datatype,
shape and values checked, NaN/Inf refused, nothing unpickled); the client half is what ``datamix infer`` sends."""

from __future__ import annotations

import json
import math

import numpy as np

HEADER_LENGTH = "inference-header-content-length"
MAX_JSON_HEADER = 1 << 20


class RequestError(Exception):
    """A request the server refuses, with the HTTP status to refuse it with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


CONTENT_ENCODINGS = {"deflate": 15, "gzip": 16 + 15}  # zlib window bits: zlib stream, gzip member


def decompress_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """A request body after its Content-Encoding (deflate or gzip, as Triton takes them), inflated at most to
    ``limit`` bytes: a body that would inflate further is refused (413) before it is, truncated or corrupt data is a
    400, another encoding a 415."""
    import zlib

    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return body
    wbits = CONTENT_ENCODINGS.get(encoding.strip().lower())
    if wbits is None:
        raise RequestError(415, f"Content-Encoding {encoding[:32]!r} is not supported; use {' or '.join(CONTENT_ENCODINGS)}")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise RequestError(400, f"request body is not valid {encoding.strip().lower()} data") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise RequestError(413, f"decompressed request body exceeds the limit of {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise RequestError(400, f"request body is truncated or has trailing data after its {encoding.strip().lower()} stream")
    return out


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


# What JSON numbers each datatype accepts: (NumPy dtype, integers only, smallest, largest).
DATATYPES = {
    "FP32": ("<f4", False, -float(np.finfo(np.float32).max), float(np.finfo(np.float32).max)),
    "FP16": ("<f2", False, -float(np.finfo(np.float16).max), float(np.finfo(np.float16).max)),
    "UINT8": ("u1", True, 0, 255),
}


def flatten_numbers(data, expected: int, datatype: str = "FP32") -> np.ndarray:
    """JSON data (flat or nested lists of numbers) -> an array of ``datatype``, without trusting its structure;
    values outside the datatype's range are refused, never wrapped or rounded into it."""
    dtype, integers, lo, hi = DATATYPES[datatype]
    flat, stack = [], [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, int) and not isinstance(item, bool) or isinstance(item, float) and not integers:
            if isinstance(item, float) and not math.isfinite(item):
                raise RequestError(400, "input data contains NaN or Inf")
            if not lo <= item <= hi:
                raise RequestError(400, f"input data holds {str(item)[:24]}, outside {datatype}'s range")
            flat.append(item)
        else:
            raise RequestError(400, f"input data must be {'integers' if integers else 'numbers'} (nested lists allowed)")
        if len(flat) > expected:
            raise RequestError(400, "input data has more elements than its shape")
    return np.asarray(flat, dtype=dtype)


def _parse_tensor(tensor, name: str, datatype: str, sample_shape: tuple, max_batch: int, binary: bytes, offset: int) -> tuple[np.ndarray, int]:
    """One input tensor of a request, checked against (datatype, [batch, *sample_shape]); returns it and the offset
    of the next tensor's bytes in the binary section."""
    if tensor.get("datatype") != datatype:
        raise RequestError(400, f"input {name!r} datatype must be {datatype}, got {str(tensor.get('datatype'))[:16]!r}")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise RequestError(400, f"input {name!r} shape must be a list of integers")
    if tuple(shape[1:]) != sample_shape or len(shape) != len(sample_shape) + 1:
        raise RequestError(400, f"input {name!r} shape {shape[:8]} does not match [batch, {', '.join(map(str, sample_shape))}]")
    batch = shape[0]
    if not 1 <= batch <= max_batch:
        raise RequestError(400, f"batch {batch} outside 1..{max_batch}")
    count = batch * int(np.prod(sample_shape))
    dtype = np.dtype(DATATYPES[datatype][0])
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError(400, "input parameters must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size != count * dtype.itemsize:
            raise RequestError(400, f"binary_data_size of {name!r} must be {count * dtype.itemsize} for shape {shape}")
        if len(binary) < offset + size:
            raise RequestError(400, f"binary section holds {len(binary) - offset} bytes for {name!r}, binary_data_size says {size}")
        array = np.frombuffer(binary, dtype=dtype, count=count, offset=offset)
        offset += size
    else:
        if "data" not in tensor:
            raise RequestError(400, f"input {name!r} has neither data nor binary_data_size")
        array = flatten_numbers(tensor["data"], count, datatype)
        if array.size != count:
            raise RequestError(400, f"input {name!r} data has {array.size} elements, shape {shape} needs {count}")
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise RequestError(400, f"input {name!r} contains NaN or Inf")
    return array.reshape(shape), offset


def parse_input(model, request: dict, binary: bytes) -> np.ndarray:
    """The request's uplink tensor, decoded to float32 by the model's codec: the payload (FP32, FP16 or UINT8) and,
    for int8, its per-sample (scale, zero point) tensor. Every field is checked; any problem is a 400."""
    from datamix_cli.protocol.codecs import check_params, decode

    codec = model.codec
    expected = [(model.input_name, codec.datatype, model.input_shape)]
    if codec.params:
        expected.append((codec.params_name(model.input_name), "FP32", (codec.params,)))
    inputs = request.get("inputs")
    names = " and ".join(repr(name) for name, _, _ in expected)
    if not isinstance(inputs, list) or len(inputs) != len(expected) or not all(isinstance(t, dict) for t in inputs):
        raise RequestError(400, f"request must have exactly the inputs {names} ({codec.name} codec)")
    by_name = {}
    for tensor in inputs:
        name = tensor.get("name")
        if not isinstance(name, str) or name not in {n for n, _, _ in expected} or name in by_name:
            raise RequestError(400, f"unknown or repeated input {str(name)[:64]!r}; expected {names}")
        by_name[name] = tensor
    arrays, offset = {}, 0
    for tensor in inputs:  # binary sections follow the order of the inputs in the request
        name = tensor["name"]
        _, datatype, sample_shape = next(e for e in expected if e[0] == name)
        arrays[name], offset = _parse_tensor(tensor, name, datatype, sample_shape, model.max_batch, binary, offset)
    if offset != len(binary):
        raise RequestError(400, f"binary section holds {len(binary)} bytes, the inputs' binary_data_size add up to {offset}")
    payload = arrays[model.input_name]
    params = None
    if codec.params:
        params = arrays[codec.params_name(model.input_name)]
        problem = check_params(params, len(payload))
        if problem:
            raise RequestError(400, problem)
    array = decode(codec, payload, params)
    if not np.isfinite(array).all():
        raise RequestError(400, "input decodes to NaN or Inf")
    return array


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


def encode_response(model_name: str, output_name: str, result: np.ndarray, parameters: dict, request_id, binary: bool, codec=None) -> tuple[bytes, int | None]:
    """An inference response body for one output (FP32, or FP16 with the fp16 downlink codec), and the JSON
    header's length when the tensor is binary."""
    from datamix_cli.protocol.codecs import CODECS, encode

    codec = codec or CODECS["fp32"]
    result = np.ascontiguousarray(encode(codec, result)[0], dtype=codec.dtype)
    output = {"name": output_name, "datatype": codec.datatype, "shape": list(result.shape)}
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


def encode_request(tensors: list[tuple[str, str, np.ndarray]], output_name: str) -> tuple[bytes, dict]:
    """A binary inference request for ``tensors`` ((name, datatype, array), in order) asking for a binary output:
    (body, headers)."""
    raws = [np.ascontiguousarray(array, dtype=DATATYPES[datatype][0]).tobytes() for _, datatype, array in tensors]
    header = json.dumps(
        {
            "inputs": [{"name": name, "shape": list(array.shape), "datatype": datatype, "parameters": {"binary_data_size": len(raw)}}
                       for (name, datatype, array), raw in zip(tensors, raws)],
            "outputs": [{"name": output_name, "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + b"".join(raws), {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}


def decode_response(data: bytes, header_length: str | None, datatype: str = "FP32") -> tuple[np.ndarray, dict]:
    """The first output of an inference response (JSON or binary) as float32, and the response's JSON part.

    Raises ValueError when the output is not of ``datatype`` (the client reports it as a server error)."""
    n = int(header_length) if header_length is not None else len(data)
    meta = json.loads(data[:n])
    output = meta["outputs"][0]
    if output.get("datatype") != datatype:
        raise ValueError(f"server returned datatype {output.get('datatype')}, expected {datatype}")
    dtype = DATATYPES[datatype][0]
    if "parameters" in output and "binary_data_size" in output["parameters"]:
        result = np.frombuffer(data[n : n + output["parameters"]["binary_data_size"]], dtype=dtype)
    else:
        result = np.asarray(output["data"], dtype=dtype)
    return result.astype(np.float32).reshape(output["shape"]), meta


LONGEST_HOST = "255.255.255.255:65535"


def request_bytes(model: str, tensors: list[tuple[str, str, tuple]], output_name: str) -> int:
    """Bytes one binary inference request of ``tensors`` ((name, datatype, shape)) takes on the socket: the request
    line and headers as http.client writes them (for the longest IPv4 host:port, no bearer token), the JSON header
    and the tensors' bytes."""
    arrays = [(name, datatype, np.zeros(shape, dtype=DATATYPES[datatype][0])) for name, datatype, shape in tensors]
    body, headers = encode_request(arrays, output_name)
    lines = [f"POST /v2/models/{model}/infer HTTP/1.1", f"Host: {LONGEST_HOST}", "Accept-Encoding: identity",
             f"Content-Length: {len(body)}", *(f"{key}: {value}" for key, value in headers.items())]
    return len("\r\n".join(lines).encode()) + 4 + len(body)
