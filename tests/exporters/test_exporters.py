"""Parity of every registered exporter with PyTorch, on tiny modules with the edge signature.

Generated from the registry; ``test_every_registered_exporter_has_a_test`` fails
when a format is registered without a case here.
"""

import numpy as np
import pytest
import torch
from torch import nn

from datamix_cli.protocol.edge_modules import HeadWithMix, TailWithDemix
from exporters import get_exporter, registered_names

K = 4


def head_case():
    head = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()).eval()
    x = torch.rand(K, 1, 8, 8)
    c = torch.from_numpy(np.random.default_rng(0).dirichlet(np.ones(K), size=K).astype(np.float32))
    return HeadWithMix(head).eval(), (x, c), ["x", "C"], "mixtures"


def tail_case():
    tail = nn.Sequential(nn.Linear(6, 5)).eval()
    c = np.random.default_rng(1).dirichlet(np.ones(K), size=K)
    return TailWithDemix(tail).eval(), (torch.randn(K, 6), torch.from_numpy(np.linalg.inv(c).astype(np.float32))), ["cloud_out", "C_inv"], "scores"


def cloud_case():
    cloud = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    return cloud, (torch.randn(3, 4, 8, 8),), ["mixtures"], "cloud_out"


# format -> the roles it is used for in a split
# The fp16 and int8 formats are verified by agreement on a trained split, not by a tolerance:
# tests/exporters/test_edge_precision.py.
CASES = {"onnx": [head_case, tail_case], "tflite": [head_case, tail_case], "torchscript": [cloud_case], "pt2": [cloud_case], "aoti": [cloud_case],
         "onnx_int8": [], "tflite_int8": [], "onnx_fp16": [], "tflite_fp16": []}


def test_every_registered_exporter_has_a_test():
    assert set(registered_names()) == set(CASES)


@pytest.mark.parametrize(
    ("name", "make_case"), [(name, case) for name in registered_names() for case in CASES.get(name, [])]
)
def test_exporter_matches_pytorch(name, make_case, tmp_path):
    exporter = get_exporter(name)
    module, inputs, input_names, output_name = make_case()
    path = tmp_path / f"part{exporter.suffix}"
    exporter.export(module, inputs, path, input_names, output_name)
    assert path.is_file() and sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # self-contained
    run = exporter.load(path)
    with torch.no_grad():
        expected = module(*inputs).numpy()
    np.testing.assert_allclose(run(*(t.numpy() for t in inputs)), expected, atol=exporter.default_atol, rtol=0)


def test_dynamic_batch_exporters_accept_any_batch(tmp_path):
    for name in registered_names():
        exporter = get_exporter(name)
        if not exporter.dynamic_batch:
            continue
        module, inputs, names, out = cloud_case()
        path = tmp_path / f"{name}{exporter.suffix}"
        exporter.export(module, inputs, path, names, out)
        run = exporter.load(path)
        for batch in (1, 7):
            x = torch.randn(batch, *inputs[0].shape[1:])
            with torch.no_grad():
                np.testing.assert_allclose(run(x.numpy()), module(x).numpy(), atol=exporter.default_atol, rtol=0)
