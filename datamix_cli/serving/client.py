"""The edge client: head + mix on the device, the cloud over the Open Inference Protocol, de-mix + tail.

A fresh C per group from OS entropy; C never leaves this process. A partial
group is padded with decoys whose results are dropped.
"""

from __future__ import annotations

import http.client
import io
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datamix_cli.errors import ConfigError, ServerError
from datamix_cli.options import Runtime, choice
from datamix_cli.serving.oip import decode_response, encode_request
from datamix_cli.protocol.groups import pad_with_decoys, shuffle_permutation, unshuffle
from datamix_cli.protocol.codecs import encode
from datamix_cli.protocol.mixing import MixingConfig, add_noise, coefficient_rng, draw_coefficients




PACE_CHUNK = 4096  # bytes written between two pauses on a paced link


class _CountedSocket:
    """A connected socket that counts the bytes written to it and read from it: what crossed the wire, HTTP request
    line, headers and body included (for https, the bytes under TLS, not the TLS records). With a ``link``
    (datamix_cli.pipeline.latency.Link) every write and read is paced to the link's rate."""

    def __init__(self, sock, link=None):
        self._sock, self.sent, self.received, self.link = sock, 0, 0, link

    def pace(self, n: int, mbps: float) -> None:
        if self.link is not None and n:
            time.sleep(n * 8 / (mbps * 1e6))

    def sendall(self, data, *args):
        view = memoryview(data).cast("B")
        step = PACE_CHUNK if self.link is not None else max(len(view), 1)
        for start in range(0, len(view), step):
            chunk = view[start : start + step]
            self._sock.sendall(chunk, *args)
            self.sent += len(chunk)
            self.pace(len(chunk), self.link.up_mbps if self.link else 0)

    def send(self, data, *args):
        n = self._sock.send(data, *args)
        self.sent += n
        self.pace(n, self.link.up_mbps if self.link else 0)
        return n

    def makefile(self, mode="r", *args, **kwargs):  # http.client reads responses through this file
        return io.BufferedReader(_CountedReader(self._sock.makefile("rb", buffering=0), self))

    def __getattr__(self, name):
        return getattr(self._sock, name)


class _CountedReader(io.RawIOBase):
    def __init__(self, raw, counter: _CountedSocket):
        self.raw, self.counter = raw, counter

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:
        n = self.raw.readinto(buffer)
        self.counter.received += n or 0
        if self.counter.link is not None:
            self.counter.pace(n or 0, self.counter.link.down_mbps)
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def _counting(cls):
    """An http.client connection class whose socket counts bytes (one class per base, made once)."""

    class Counting(cls):
        counted = None
        link = None  # set by OipClient: pace the socket to this link

        def connect(self):
            super().connect()
            self.sock = self.counted = _CountedSocket(self.sock, self.link)

    return Counting


_CONNECTIONS = {False: _counting(http.client.HTTPConnection), True: _counting(http.client.HTTPSConnection)}


class OipClient:
    """A minimal Open Inference Protocol client: one keep-alive connection, binary tensors both ways."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0, compress: bool = False, link=None):
        parsed = urllib.parse.urlparse(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ServerError(f"server URL {url!r} must look like http://host:port")
        self.host, self.port, self.https = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80), parsed.scheme == "https"
        self.prefix = parsed.path.rstrip("/")
        self.timeout = timeout
        self.compress = compress  # deflate inference request bodies (Content-Encoding, as Triton takes them)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._conn = None
        self._metadata: dict[str, dict] = {}
        self.last_wire = (0, 0)  # bytes (written, read) on the socket by the last request, headers included
        # A simulated link (datamix_cli.pipeline.latency.Link): writes and reads paced to its rates, and half its
        # RTT before each request is sent and after its response is read (the propagation both ways).
        self.link = link

    def _connection(self):
        if self._conn is None:
            self._conn = _CONNECTIONS[self.https](self.host, self.port, timeout=self.timeout)
            self._conn.link = self.link
        return self._conn

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        for attempt in (0, 1):  # one retry when a kept-alive connection was closed by the server
            conn = self._connection()
            try:
                counter = getattr(conn, "counted", None)  # the socket's counter outlives the socket (Connection: close)
                before = (counter.sent, counter.received) if counter is not None else (0, 0)
                half_rtt = self.link.rtt_ms / 2e3 if self.link is not None else 0.0
                sent = time.perf_counter()
                if half_rtt:
                    time.sleep(half_rtt)
                conn.request(method, self.prefix + path, body=body, headers={**self.headers, **(headers or {})})
                uploaded = time.perf_counter()
                response = conn.getresponse()
                data = response.read()
                if half_rtt:
                    time.sleep(half_rtt)
                if conn.counted is not counter:  # connected (or reconnected) for this request
                    before = (0, 0)
                self.last_wire = (conn.counted.sent - before[0], conn.counted.received - before[1])
                return response, data, uploaded - sent
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                self.close()
                if attempt:
                    raise ServerError(f"cannot reach the server at {self.host}:{self.port}: {exc}") from None

    def get_json(self, path: str) -> dict:
        response, data, _ = self._request("GET", path)
        if response.status != 200:
            raise ServerError(f"GET {path} returned {response.status}: {data[:200].decode(errors='replace')}")
        return json.loads(data)

    def infer(self, model: str, tensors: list[tuple[str, str, np.ndarray]], output_datatype: str = "FP32") -> tuple[np.ndarray, dict]:
        """Send ``tensors`` ((name, datatype, array)) in binary; returns the first output (float32) and timings
        (upload_s, cloud_ms, the bytes on the wire)."""
        body, headers = encode_request(tensors, self.output_name(model))
        if self.compress:
            import zlib

            body, headers = zlib.compress(body, 6), {**headers, "Content-Encoding": "deflate"}
        response, data, upload_s = self._request("POST", f"/v2/models/{model}/infer", body, headers)
        if response.status != 200:
            raise ServerError(f"inference returned {response.status}: {data[:300].decode(errors='replace')}")
        try:
            result, meta = decode_response(data, response.getheader("Inference-Header-Content-Length"), output_datatype)
        except ValueError as exc:
            raise ServerError(str(exc)) from None
        timing = {"upload_s": upload_s, "cloud_ms": float((meta.get("parameters") or {}).get("cloud_ms", 0.0)),
                  "wire_up": self.last_wire[0], "wire_down": self.last_wire[1]}
        return result, timing

    def metadata(self, model: str) -> dict:
        """The model's metadata (asked once): tensor names differ between engines, e.g. Triton's libtorch INPUT__0."""
        if model not in self._metadata:
            meta = self.get_json(f"/v2/models/{model}")
            try:
                meta["inputs"][0]["name"], meta["outputs"][0]["name"]
            except (KeyError, IndexError, TypeError):
                raise ServerError(f"the server's metadata for {model!r} names no input and output tensor") from None
            self._metadata[model] = meta
        return self._metadata[model]

    def input_name(self, model: str) -> str:
        return self.metadata(model)["inputs"][0]["name"]

    def output_name(self, model: str) -> str:
        return self.metadata(model)["outputs"][0]["name"]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class StageTimes:
    """Milliseconds per request batch, per stage."""

    head_mix: list[float] = field(default_factory=list)
    uplink: list[float] = field(default_factory=list)
    cloud: list[float] = field(default_factory=list)
    downlink: list[float] = field(default_factory=list)
    demix_tail: list[float] = field(default_factory=list)

    def totals(self) -> list[float]:
        """Each request's end-to-end time: the sum of its stages."""
        return [sum(stage) for stage in zip(self.head_mix, self.uplink, self.cloud, self.downlink, self.demix_tail)]


@dataclass(frozen=True)
class EdgeResult:
    logits: np.ndarray  # (N, classes), decoys dropped
    bytes_up: int  # tensor bytes of the mixtures sent, decoys included
    bytes_down: int
    wire_up: int  # bytes written to the socket by the inference requests: HTTP line, headers, JSON and tensor
    wire_down: int  # bytes read back from it
    inputs: np.ndarray  # the padded input, decoys included
    groups: tuple  # per group (row indices into ``inputs``, C, noise added or None); in memory only, for checks


def edge_format(runtime: str, precision: str) -> str:
    """The artifact format ``runtime`` runs at ``precision`` (fp32, fp16 or int8)."""
    if precision == "fp32":
        return runtime
    if precision in ("fp16", "int8"):
        return f"{runtime}_{precision}"
    raise ConfigError(f"--precision must be fp32, fp16 or int8, got {precision!r}")


class EdgeClient:
    """Loads the edge artifacts of a split folder (sha256-verified) and runs the protocol against a server."""

    def __init__(self, folder: Path, runtime: str = "onnx", seed: int | None = None, manifest=None, precision: str = "fp32"):
        from datamix_cli.artifacts.folder import SplitFolder

        runtime = edge_format(choice(Runtime, runtime, "runtime").value, precision)
        self.folder = Path(folder)
        # A caller that already loaded (and so verified) the whole folder passes its manifest.
        parts = SplitFolder(self.folder, roles=("head", "tail", "decoys"), manifest=manifest)
        self.manifest = parts.manifest
        self.head = parts.runner("head", runtime)
        self.tail = parts.runner("tail", runtime)
        self.mixing = MixingConfig.from_protocol(self.manifest.protocol)
        self.decoys = parts.decoys()
        self.rng = coefficient_rng(seed)
        self.times = StageTimes()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest.model["input_shape"][1:])

    def check_inputs(self, x: np.ndarray) -> np.ndarray:
        from datamix_cli.errors import InputShapeError

        x = np.asarray(x, dtype=np.float32)
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise InputShapeError(f"inputs have shape {tuple(x.shape[1:])} per sample, the split expects {self.input_shape}")
        return x

    def _check_server(self, server: OipClient, model: str) -> list[str]:
        """The server's input names for this split's uplink (payload, then the int8 codec's parameters), after
        checking that it takes this split's shape, datatypes and codec."""
        meta = server.metadata(model)
        tensors, codec = meta["inputs"], self.mixing.uplink_codec
        expected = list(self.manifest.split["uplink"]["shape"][1:])
        if list(tensors[0].get("shape", [])[1:]) != expected:
            raise ServerError(f"the server's model {model!r} takes {tensors[0].get('shape')}, this split sends [-1, {', '.join(map(str, expected))}]")
        datatypes = [t.get("datatype") for t in tensors]
        wanted = [codec.datatype] + ["FP32"] * bool(codec.params)
        output = (meta.get("outputs") or [{}])[0].get("datatype", "FP32")
        if datatypes != wanted or output != self.mixing.downlink_codec.datatype:
            raise ServerError(
                f"the server's model {model!r} takes {' + '.join(map(str, datatypes))} and returns {output}; this split needs datamix "
                f"protocol {self.manifest.protocol['version']} with the {codec.name} uplink ({' + '.join(wanted)}) and the "
                f"{self.mixing.downlink} downlink ({self.mixing.downlink_codec.datatype}): serve it with this datamix, or re-export the Triton repository"
            )
        return [t["name"] for t in tensors]

    def run(self, server: OipClient, x: np.ndarray, groups_per_request: int = 16) -> EdgeResult:
        """Predict ``x`` (N, ...) through the split; requests carry up to ``groups_per_request`` groups."""
        x = self.check_inputs(x)
        k = self.mixing.k
        padded, n = pad_with_decoys(x, self.decoys, k, self.rng)
        model = self.manifest.model["name"]
        names = self._check_server(server, model)
        codec = self.mixing.uplink_codec
        logits, groups, up, down, wire_up, wire_down = [], [], 0, 0, 0, 0
        for start in range(0, len(padded), groups_per_request * k):
            chunk = padded[start : start + groups_per_request * k]
            t0 = time.perf_counter()
            cs = [draw_coefficients(self.rng, self.mixing).astype(np.float32) for _ in range(len(chunk) // k)]
            mixtures = np.concatenate([self.head(chunk[g * k : (g + 1) * k], c) for g, c in enumerate(cs)])
            mixtures, noise = add_noise(self.mixing, mixtures, lambda shape: self.rng.standard_normal(shape, dtype=np.float32))
            order = shuffle_permutation(self.rng, len(mixtures)) if self.mixing.shuffle else None
            sent = mixtures[order] if order is not None else mixtures
            payload, params = encode(codec, sent)
            tensors = [(names[0], codec.datatype, payload)] + ([(names[1], "FP32", params)] if params is not None else [])
            t1 = time.perf_counter()
            returned, timing = server.infer(model, tensors, self.mixing.downlink_codec.datatype)
            t2 = time.perf_counter()
            cloud_out = unshuffle(returned, order) if order is not None else returned
            for g, c in enumerate(cs):
                c_inv = np.linalg.inv(c.astype(np.float64)).astype(np.float32)
                logits.append(self.tail(np.ascontiguousarray(cloud_out[g * k : (g + 1) * k]), c_inv))
                groups.append((np.arange(start + g * k, start + (g + 1) * k), c, None if noise is None else noise[g * k : (g + 1) * k]))
            t3 = time.perf_counter()
            up += sum(t[2].nbytes for t in tensors)
            down += returned.size * self.mixing.downlink_codec.value_bytes
            wire_up += timing["wire_up"]
            wire_down += timing["wire_down"]
            uplink_ms = timing["upload_s"] * 1e3
            self.times.head_mix.append((t1 - t0) * 1e3)
            self.times.uplink.append(uplink_ms)
            self.times.cloud.append(timing["cloud_ms"])
            self.times.downlink.append(max(0.0, (t2 - t1) * 1e3 - uplink_ms - timing["cloud_ms"]))
            self.times.demix_tail.append((t3 - t2) * 1e3)
        return EdgeResult(np.concatenate(logits)[:n], up, down, wire_up, wire_down, padded, tuple(groups))
