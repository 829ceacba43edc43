"""The secret never leaves the edge, end to end, with shuffling and noise on.

One pipeline through the CLI: ``split --shuffle --noise`` (mixing-aware
training with both), ``serve-local`` (the client un-shuffles), ``serve`` +
``infer --json`` and ``audit``. Every C drawn anywhere is recorded by a spy,
then the manifest, every written file but ``test_vectors.npz`` (whose C is a
fixed test matrix never used on data), the server's log and all CLI output
are scanned for C, C⁻¹ and their rows, as text and as float32/float64 bytes.
"""

import json
import re
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import datamix_cli.protocol.mixing
from datamix_cli.main import app

from tests.helpers import EXAMPLES_FILE

NUMBER = re.compile(rb"-?\d+\.\d+(?:[eE][-+]?\d+)?")


class SecretScanner:
    """Finds any entry or row of the recorded matrices in text or bytes."""

    def __init__(self, matrices):
        self.rows = [row for m in matrices for row in np.asarray(m, dtype=np.float64)]
        self.entries32 = np.unique(np.concatenate(self.rows).astype(np.float32))
        # Per byte width: every row's bytes, and the bytes of rows' first entries as one array to search with.
        self.row_bytes, self.first_words = {}, {}
        for t in ("<f4", "<f8"):
            dtype = np.dtype(t)
            self.row_bytes[dtype] = {row.astype(t).tobytes() for row in self.rows}
            self.first_words[dtype] = np.array(sorted({row.astype(t)[:1].tobytes() for row in self.rows}), dtype=f"V{dtype.itemsize}")

    def in_bytes(self, data: bytes) -> bool:
        for dtype, rows in self.row_bytes.items():
            width = dtype.itemsize
            for start in range(width):  # every byte alignment
                usable = (len(data) - start) // width * width
                if usable <= 0:
                    continue
                words = np.frombuffer(data[start : start + usable], dtype=f"V{width}")
                for hit in np.flatnonzero(np.isin(words, self.first_words[dtype])):
                    offset = start + hit * width
                    if any(data[offset : offset + len(row)] == row for row in rows):
                        return True
        return False

    def in_text(self, data: bytes) -> bool:
        tokens = NUMBER.findall(data)
        values = np.array([float(t) for t in tokens]) if tokens else np.zeros(0)
        # A single number printed to float32 precision or better that is exactly an entry.
        precise = np.array([len(t.lstrip(b"-0.").replace(b".", b"").split(b"e")[0].split(b"E")[0]) >= 7 for t in tokens], dtype=bool)
        if precise.any() and np.isin(values[precise].astype(np.float32), self.entries32).any():
            return True
        # A whole row printed at any precision of 4 decimals or more.
        rows = np.stack(self.rows)
        k = rows.shape[1]
        if len(values) < k:
            return False
        windows = np.lib.stride_tricks.sliding_window_view(values, k)
        for start in range(0, len(windows), 64):
            chunk = windows[start : start + 64]
            if (np.abs(chunk[:, None, :] - rows[None]) <= 1e-4).all(axis=2).any():
                return True
        return False

    def leaks(self, data: bytes) -> bool:
        return self.in_bytes(data) or self.in_text(data)


def test_the_scanner_finds_planted_secrets():
    c = np.random.default_rng(0).dirichlet(np.ones(4), size=4)
    c_inv = np.linalg.inv(c)
    scanner = SecretScanner([c, c_inv])
    filler = np.random.default_rng(1).random(1000).tobytes()
    assert scanner.leaks(filler[:333] + c.astype(np.float32)[2].tobytes() + filler[333:])
    assert scanner.leaks(filler[:101] + c_inv.tobytes() + filler[101:])
    assert scanner.leaks(json.dumps({"C": c.tolist()}).encode())
    assert scanner.leaks(np.array2string(c_inv, precision=4).encode())
    assert scanner.leaks(f"coefficient {np.float32(c[1, 2])!r}".encode())
    assert not scanner.leaks(filler + json.dumps({"loss": 0.123, "acc": [0.98, 0.97, 0.96, 0.95]}).encode())


@pytest.fixture()
def recorded(monkeypatch):
    """Every C drawn by any datamix module during the test."""
    original = datamix_cli.protocol.mixing.draw_coefficients
    drawn = []

    def spy(rng, config):
        c = original(rng, config)
        drawn.append(c.copy())
        return c

    for name, module in list(sys.modules.items()):
        if name.startswith(("datamix_cli", "exporters", "partitioners")) and getattr(module, "draw_coefficients", None) is original:
            monkeypatch.setattr(module, "draw_coefficients", spy)
    return drawn


def test_no_c_anywhere_after_split_serve_local_infer_and_audit_with_shuffle_and_noise(tmp_path, small_cnn_weights, recorded):
    from datamix_cli.data.datasets import load_dataset
    from datamix_cli.serving.loopback import ServerProcess, free_port
    from datamix_cli.artifacts.manifest import load_manifest

    runner, outputs = CliRunner(), []
    out = tmp_path / "split"
    split = [
        "split", f"{EXAMPLES_FILE}:small_cnn", "--weights", str(small_cnn_weights), "--data", "digits", "--input-shape", "1,1,32,32",
        "--out", str(out), "--epochs", "1", "--seed", "0", "--shuffle", "--noise", "0.05", "--formats", "onnx",
    ]
    for args in (split, ["serve-local", str(out), "--samples", "40", "--groups-per-request", "4", "--json"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output.encode())
    manifest = load_manifest(out)
    assert manifest.protocol["shuffle"] is True and manifest.protocol["noise_sigma"] == 0.05
    report = json.loads(outputs[1])
    assert report["passed"] and report["accuracy"] >= 0.7, report  # far above chance (0.1): training and client un-shuffle

    np.save(tmp_path / "x.npy", load_dataset("digits", (1, 32, 32)).x[:9])
    with ServerProcess(out, free_port()) as server:
        server.wait_ready(60)
        result = runner.invoke(app, ["infer", str(out), str(tmp_path / "x.npy"), "--server", server.url, "--json"])
        server_log = server.output().encode()
    assert result.exit_code == 0, result.output
    outputs.append(result.output.encode())
    result = runner.invoke(app, ["audit", str(out), "--samples", "32", "--decoder-epochs", "2", "--report", str(tmp_path / "audit.png"), "--json"])
    assert result.exit_code == 0, result.output
    outputs.append(result.output.encode())
    assert json.loads(result.output)["separation"]["grouping_known"] is False  # shuffling hides the groups from the audit's cloud

    assert len(recorded) > 100  # training, serve-local, infer and audit all drew through the spy
    scanner = SecretScanner([m for c in recorded for m in (c, np.linalg.inv(c))])
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "test_vectors.npz"]
    assert {"manifest.json", "head.onnx", "cloud.pt", "decoys.npz", "audit.png"} <= {p.name for p in written}
    for path in written:
        assert not scanner.leaks(path.read_bytes()), f"a mixing matrix appears in {path.relative_to(tmp_path)}"
    for i, text in enumerate([*outputs, server_log]):
        assert not scanner.leaks(text), f"a mixing matrix appears in output {i}"
