"""The client counts what crosses the socket: checked against a server that counts what it receives and sends."""

import json
import socket
import threading

import numpy as np

from datamix_cli.serving.client import OipClient


class CountingServer:
    """A raw-socket HTTP/1.1 server: reads each request whole (headers + Content-Length body), answers with a
    binary OIP response of a fixed tensor, and counts every byte received and sent."""

    def __init__(self, output: np.ndarray, close_after: bool = False):
        self.output, self.close_after = output, close_after
        self.received = self.sent = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            conn, _ = self.listener.accept()
            with conn:
                buffer = b""
                while True:
                    while b"\r\n\r\n" not in buffer:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        self.received += len(chunk)
                        buffer += chunk
                    if b"\r\n\r\n" not in buffer:
                        break
                    head, _, rest = buffer.partition(b"\r\n\r\n")
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
                    while len(rest) < length:
                        chunk = conn.recv(65536)
                        self.received += len(chunk)
                        rest += chunk
                    buffer = rest[length:]
                    raw = self.output.astype("<f4").tobytes()
                    header = json.dumps({"model_name": "m", "outputs": [{"name": "out", "datatype": "FP32", "shape": list(self.output.shape),
                                                                          "parameters": {"binary_data_size": len(raw)}}]}).encode()
                    body = header + raw
                    response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                + f"Inference-Header-Content-Length: {len(header)}\r\nContent-Length: {len(body)}\r\n".encode()
                                + (b"Connection: close\r\n" if self.close_after else b"") + b"\r\n" + body)
                    self.sent += len(response)  # counted before it is sent: the client cannot read bytes not yet counted
                    conn.sendall(response)
                    if self.close_after:
                        break


def test_the_wire_bytes_the_client_counts_are_what_the_server_counted_both_ways():
    server = CountingServer(np.arange(24, dtype=np.float32).reshape(4, 6))
    client = OipClient(f"http://127.0.0.1:{server.port}", token="t0ken")
    client._metadata["m"] = {"inputs": [{"name": "in"}], "outputs": [{"name": "out"}]}  # skip the metadata request
    totals = [0, 0]
    for batch in (4, 8, 1):
        result, timing = client.infer("m", [("in", "FP32", np.ones((batch, 3, 5), dtype=np.float32))])
        assert result.shape == (4, 6)
        totals[0] += timing["wire_up"]
        totals[1] += timing["wire_down"]
        assert timing["wire_up"] > batch * 15 * 4  # the tensor and its framing
    client.close()
    assert totals == [server.received, server.sent]


def test_counting_survives_a_server_that_closes_each_connection():
    server = CountingServer(np.zeros((2, 2), dtype=np.float32), close_after=True)
    client = OipClient(f"http://127.0.0.1:{server.port}")
    client._metadata["m"] = {"inputs": [{"name": "in"}], "outputs": [{"name": "out"}]}
    totals = [0, 0]
    for _ in range(3):
        _, timing = client.infer("m", [("in", "FP32", np.ones((2, 7), dtype=np.float32))])
        totals[0] += timing["wire_up"]
        totals[1] += timing["wire_down"]
    client.close()
    assert totals == [server.received, server.sent]


def test_the_search_s_request_size_is_what_the_server_receives():
    """``request_bytes`` (what --max-uplink-bytes counts) against the bytes a server received for the same request."""
    from datamix_cli.serving.oip import LONGEST_HOST, request_bytes

    server = CountingServer(np.zeros((4, 2), dtype=np.float32))
    client = OipClient(f"http://127.0.0.1:{server.port}")
    client._metadata["m"] = {"inputs": [{"name": "mixtures"}], "outputs": [{"name": "cloud_out"}]}
    q, params = np.zeros((4, 3, 8, 8), np.uint8), np.ones((4, 2), np.float32)
    client.infer("m", [("mixtures", "UINT8", q), ("mixtures_quant", "FP32", params)])
    client.close()
    estimate = request_bytes("m", [("mixtures", "UINT8", q.shape), ("mixtures_quant", "FP32", params.shape)], "cloud_out")
    # The estimate assumes the longest IPv4 host:port; this request's Host header is shorter by the difference.
    assert server.received == estimate - (len(LONGEST_HOST) - len(f"127.0.0.1:{server.port}"))
