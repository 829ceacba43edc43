"""A Vision Transformer without torchvision: readable cut names inside the encoder, FLOPs by hand, a split end to end.

``examples/models.py:vit`` is laid out like torchvision's ViT (pre-norm blocks of ``nn.MultiheadAttention`` and an
MLP, class token read with ``x[:, 0]``), so this runs in the default suite; the torchvision zoo itself is tested by
``make test-torchvision`` (tests/test_torchvision.py).
"""

import json
import re

import torch
from torch import nn
from typer.testing import CliRunner

from datamix_cli.main import app
from examples.models import vit
from partitioners.graph import trace_model
from partitioners.partition import partition
from partitioners.profile import profile_model

from tests.helpers import EXAMPLES_FILE

SHAPE = (1, 1, 32, 32)
FX_NAME = re.compile(r"(getitem|getattr)(_\d+)?")


def test_cut_names_inside_the_encoder_are_module_paths():
    p = profile_model(trace_model(vit()), SHAPE)
    names = [c.name for c in p.cut_points]
    assert names == [
        "input", "conv_proj", "flatten", "transpose", "cat", "add",
        "encoder.0.add_1", "encoder.0",  # after the attention's residual add; after the whole block
        "encoder.1.add_3", "encoder",
        "ln", "ln[:,0]",  # the class token: what fx calls getitem_5
    ]
    assert not any(FX_NAME.fullmatch(n.rsplit(".", 1)[-1]) for n in names)
    # fx's node names and inner module paths stay usable as aliases.
    assert p.cut("getitem_5").name == "ln[:,0]"
    assert p.cut("encoder.1").name == "encoder"
    assert p.classifier_name == "head"


class PickAndAttend(nn.Module):
    """Indexing a module's tuple output and a slice of a tensor: both are named as the indexing they do."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = self.fc(x)[:, 1:3]
        y = self.attn(h, h, h, need_weights=False)[0]
        return self.out(y[..., -1, :])


def test_indexing_cuts_read_as_python_indexing():
    p = profile_model(trace_model(PickAndAttend()), (1, 4, 8))
    assert [c.name for c in p.cut_points] == ["input", "fc", "fc[:,1:3]", "attn[0]", "attn[0][...,-1,:]"]


def test_attention_flops_by_hand():
    # E = 32, L = 17 tokens (16 patches and the class token), MLP 64, 2 blocks, 10 classes.
    patch_embedding = 32 * 16 * (8 * 8)
    block = 4 * 17 * 32 * 32 + 2 * 17 * 17 * 32 + 2 * 17 * 32 * 64  # Q/K/V/out projections, QKᵀ and AV, MLP
    macs = patch_embedding + 2 * block + 32 * 10
    p = profile_model(trace_model(vit()), SHAPE)
    assert p.total_flops == 2 * macs == 697_216
    assert set(p.uncounted_ops) == {"add", "gelu", "native_layer_norm"}


def test_partition_identity_at_every_cut():
    """Every cut as the head's end (tail from the class token) and as the tail's start (head = the input)."""
    model = vit().eval()
    traced = trace_model(model)
    cuts = profile_model(traced, SHAPE).cut_points
    pairs = [(head, cuts[-1]) for head in cuts[:-1]] + [(cuts[0], tail) for tail in cuts[1:-1]]
    x = torch.randn(3, *SHAPE[1:])
    with torch.no_grad():
        expected = model(x)
        for head, tail in pairs:
            parts = partition(traced, head, tail)
            torch.testing.assert_close(parts.tail(parts.cloud(parts.head(x))), expected, rtol=0, atol=0, msg=f"{head.name}/{tail.name}")


def test_split_inside_the_encoder_end_to_end(tmp_path):
    """`datamix split` with the head ending inside the first block and the tail starting at the class token."""
    out = tmp_path / "vit-split"
    args = [
        "split", f"{EXAMPLES_FILE}:vit", "--data", "digits", "--input-shape", "1,1,32,32", "--out", str(out),
        "--head-cut", "encoder.0.add_1", "--tail-cut", "ln[:,0]", "--epochs", "0", "--formats", "onnx",
        "--cloud-formats", "torchscript", "--allow-low-accuracy", "--json",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.output[result.output.index("{"):])
    assert (manifest["split"]["head_cut"], manifest["split"]["tail_cut"]) == ("encoder.0.add_1", "ln[:,0]")
    assert manifest["split"]["uplink"]["shape"][1:] == [17, 32] and manifest["split"]["downlink"]["shape"][1:] == [32]
    assert {a["path"] for a in manifest["artifacts"]} == {"edge/head.onnx", "edge/tail.onnx", "edge/head.pt", "edge/tail.pt", "cloud/cloud.pt"}
    assert all(a["max_abs_error"] <= a["tolerance"] for a in manifest["artifacts"]), manifest["artifacts"]
    assert manifest["flops"]["total"] == 697_216 and 0 < manifest["flops"]["cloud"] < manifest["flops"]["total"]
