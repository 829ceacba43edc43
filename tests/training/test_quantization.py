"""Quantization-aware fine-tuning's fake quantization, against the int8 grid written out by hand: weights symmetric
per output channel (levels -127..127), activations affine uint8 over a range that includes zero."""

import pytest
import torch
import torch.nn.functional as F


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))


def _uint8(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    scale = (high - low) / 255
    zero = round(-low / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale


def _int8_per_channel(w: torch.Tensor) -> torch.Tensor:
    scale = w.reshape(len(w), -1).abs().amax(1).reshape(-1, *[1] * (w.dim() - 1)) / 127
    return torch.round(w / scale) * scale


def _by_hand(model, x, weights):
    """The model with every conv/linear input, the output, and every weight on the int8 grid, each range that of
    the first tensor it sees (eval mode holds it, with zero included): the oracle."""
    conv, linear = model[0], model[3]
    first = lambda t: _uint8(t, min(t.min().item(), 0.0), max(t.max().item(), 0.0))  # noqa: E731
    h = F.conv2d(first(x), _int8_per_channel(weights["0.weight"]), conv.bias)
    h = torch.flatten(torch.relu(h), 1)
    return first(F.linear(first(h), _int8_per_channel(weights["3.weight"]), linear.bias))


def test_fake_quantization_rounds_to_the_int8_grid_and_leaves_the_weights_as_they_were():
    from datamix_cli.training.quantization import fake_quantized

    model = _model().eval()
    x = torch.randn(8, 2, 6, 6)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    reference = model(x)
    with fake_quantized(model), torch.no_grad():
        simulated = model(x)
        assert not torch.allclose(simulated, reference, atol=1e-3)  # really rounded
        torch.testing.assert_close(simulated, _by_hand(model, x, before), rtol=0, atol=1e-5)  # fp32 weights: inside, .weight is rounded
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())
    assert not any(hasattr(m, "parametrizations") for m in model.modules())
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
    torch.testing.assert_close(model(x), reference, rtol=0, atol=0)


def test_gradients_pass_straight_through_to_the_fp32_weights_and_ranges_move_only_in_training():
    from datamix_cli.training.quantization import RANGE_MOMENTUM, fake_quantized

    model = _model().train()
    weights = [model[0].weight, model[3].weight]
    x = torch.randn(8, 2, 6, 6)
    with fake_quantized(model):
        model(x).square().sum().backward()
        assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in weights)
        assert {id(p) for p in model.parameters()} >= {id(w) for w in weights}  # the optimiser's parameters are the same tensors
        quant = next(iter(model[0]._forward_pre_hooks.values())).__closure__[0].cell_contents
        first = quant.high.item()
        model(3 * x)  # training: the tracked maximum moves a RANGE_MOMENTUM step towards the new one
        assert quant.high.item() == pytest.approx(first + RANGE_MOMENTUM * ((3 * x).max().item() - first))
        held = quant.high.item()
        model.eval()
        model(10 * x)
        assert quant.high.item() == held


def test_split_runs_quantization_aware_epochs_after_the_mixing_aware_ones(tmp_path, small_cnn_weights):
    """The epochs are recorded and marked, and the fp32 parts that ship compute in fp32 again (no fake quantization
    left in them, which their export would carry as QuantizeLinear/DequantizeLinear)."""
    import onnx

    from datamix_cli.artifacts.manifest import load_manifest
    from datamix_cli.model.loading import ModelSource
    from datamix_cli.pipeline.export import ExportConfig
    from datamix_cli.pipeline.split import SplitConfig, run_split
    from datamix_cli.training.finetune import FinetuneConfig
    from tests.helpers import EXAMPLES_FILE

    out = tmp_path / "s"
    run_split(SplitConfig(source=ModelSource(f"{EXAMPLES_FILE}:small_cnn", weights=small_cnn_weights), data="digits", out=out, input_shape=(1, 1, 32, 32),
                          training=FinetuneConfig(epochs=1, seed=0), qat_epochs=1,
                          export=ExportConfig(formats=("onnx", "onnx_int8"), cloud_formats=("torchscript",), allow_mismatch=True)))
    manifest = load_manifest(out)
    training = manifest.training
    assert training["quantization_aware_epochs"] == 1 and [r.get("quantization_aware", False) for r in training["history"]] == [False, True]
    assert "then quantization-aware epochs 2-2" in training["stopped"]
    for role in ("head", "tail"):
        ops = {n.op_type for n in onnx.load(str(out / f"edge/{role}.onnx")).graph.node}
        assert not ops & {"QuantizeLinear", "DequantizeLinear"}, ops
    int8 = next(a for a in manifest.artifacts if a["format"] == "onnx_int8")["agreement"]
    assert int8["reference_accuracy"] > 0.8 and int8["accuracy"] > 0.8
