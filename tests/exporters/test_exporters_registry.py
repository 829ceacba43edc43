"""The exporter registry: one name, one exporter."""

from pathlib import Path

import pytest

from datamix_cli.errors import ExporterRegistryError
from exporters import registry


class FakeExporter:
    name = "fake-format-for-test"
    suffix = ".fake"
    extra = "none"
    default_atol = 1e-4
    dynamic_batch = True
    roles = ("cloud",)

    def check_available(self) -> None:
        pass

    def export(self, module, example_inputs, path: Path, input_names, output_name) -> None:
        path.write_bytes(b"")

    def load(self, path: Path, threads: int = 1):
        return lambda *arrays: arrays[0]


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_register_and_get(clean_registry):
    exporter = registry.register(FakeExporter())
    assert registry.get_exporter("fake-format-for-test") is exporter
    assert "fake-format-for-test" in registry.registered_names()


def test_registering_a_name_twice_raises(clean_registry):
    registry.register(FakeExporter())
    with pytest.raises(ExporterRegistryError, match="already registered"):
        registry.register(FakeExporter())


def test_unknown_name_lists_the_registered_ones(clean_registry):
    with pytest.raises(ExporterRegistryError, match="no exporter named 'nope'"):
        registry.get_exporter("nope")


def test_objects_without_the_protocol_are_rejected(clean_registry):
    with pytest.raises(ExporterRegistryError, match="protocol"):
        registry.register(object())


def test_verification_reports_the_largest_error_not_a_typical_one():
    import numpy as np

    from exporters.verify import Check, max_abs_error

    reference = lambda x: x  # noqa: E731
    one_bad_element = lambda x: x + (np.arange(x.size).reshape(x.shape) == 5) * 0.5  # noqa: E731
    cases = [(np.zeros((4, 8)),), (np.ones((2, 3)),)]
    assert max_abs_error(one_bad_element, reference, cases) == 0.5
    assert not Check("edge/head.onnx", max_abs_error(one_bad_element, reference, cases), 1e-4).passed
    assert max_abs_error(lambda x: x[:1], reference, cases) == float("inf")  # a wrong shape never passes
