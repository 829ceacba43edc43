"""Model input: factory specs, weights, .pt2 archives, and pickles only on request."""

import pytest
import torch

from datamix_cli.errors import InputFileError, ModelSpecError, UntrustedPickleError, WeightsMismatchError
from datamix_cli.model.loading import ModelSource, load_model

from tests.helpers import EXAMPLES_FILE


def test_file_factory_and_module_factory_build_the_same_architecture():
    a = load_model(ModelSource(f"{EXAMPLES_FILE}:small_cnn"))
    b = load_model(ModelSource("examples.models:small_cnn"))
    assert list(a.state_dict()) == list(b.state_dict())
    assert not a.training


def test_factory_kwargs_are_passed():
    model = load_model(ModelSource(f"{EXAMPLES_FILE}:small_cnn", factory_kwargs={"num_classes": 2}))
    assert model[-1].out_features == 2


def test_weights_are_loaded(tmp_path):
    source = load_model(ModelSource(f"{EXAMPLES_FILE}:small_cnn"))
    torch.save(source.state_dict(), tmp_path / "w.pt")
    loaded = load_model(ModelSource(f"{EXAMPLES_FILE}:small_cnn", weights=tmp_path / "w.pt"))
    for (k, v), w in zip(source.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(v, w, msg=k)


def test_weights_that_do_not_fit_name_the_keys(tmp_path):
    state = load_model(ModelSource(f"{EXAMPLES_FILE}:small_cnn")).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["0.weight"]
    state["13.weight"] = torch.zeros(3, 64)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(WeightsMismatchError) as err:
        load_model(ModelSource(f"{EXAMPLES_FILE}:small_cnn", weights=tmp_path / "w.pt"))
    message = str(err.value)
    assert "missing keys: 0.weight" in message
    assert "unexpected keys: extra.weight" in message
    assert "shape mismatch: 13.weight" in message


def test_weights_file_holding_code_is_refused_without_running_it(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(UntrustedPickleError):
        load_model(ModelSource(f"{EXAMPLES_FILE}:small_cnn", weights=tmp_path / "module.pt"))


def test_pickled_module_needs_trust_pickle(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), path)
    with pytest.raises(UntrustedPickleError, match="--trust-pickle"):
        load_model(ModelSource(str(path)))
    model = load_model(ModelSource(str(path), trust_pickle=True))
    assert isinstance(model, torch.nn.Sequential)


def test_exported_archive(tmp_path):
    path = tmp_path / "m.pt2"
    module = torch.nn.Sequential(torch.nn.Linear(4, 3))
    torch.export.save(torch.export.export(module, (torch.randn(1, 4),)), path)
    model = load_model(ModelSource(str(path)))
    x = torch.randn(1, 4)
    torch.testing.assert_close(model(x), module(x))


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ("missing_file.py:net", InputFileError, "model file not found"),
        ("missing.pt2", InputFileError, "not found"),
        (f"{EXAMPLES_FILE}:no_such_factory", ModelSpecError, "factory 'no_such_factory' not found.*resnet"),
        (f"{EXAMPLES_FILE}:", ModelSpecError, "malformed"),
        ("not a module:net", ModelSpecError, "malformed"),
        ("no_such_package_xyz.models:net", ModelSpecError, "cannot import"),
        ("just_a_word", ModelSpecError, "neither"),
    ],
)
def test_bad_specs(spec, error, match):
    with pytest.raises(error, match=match):
        load_model(ModelSource(spec))


def test_factory_returning_something_else(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def net():\n    return 42\n")
    with pytest.raises(ModelSpecError, match="not a torch.nn.Module"):
        load_model(ModelSource(f"{path}:net"))


def test_model_file_may_import_its_siblings(tmp_path):
    (tmp_path / "helper_blocks_xyz.py").write_text("import torch\nLayer = torch.nn.Linear\n")
    (tmp_path / "m.py").write_text("import torch\nfrom helper_blocks_xyz import Layer\ndef net():\n    return torch.nn.Sequential(Layer(2, 2))\n")
    assert isinstance(load_model(ModelSource(f"{tmp_path / 'm.py'}:net")), torch.nn.Module)
