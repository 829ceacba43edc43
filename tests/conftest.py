"""Session fixtures: trained models and splits made once per test run (helpers live in tests/helpers)."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from tests.helpers import EXAMPLES_FILE, MIN_ORIGINAL_ACCURACY, ORACLE_FILE, seed_everything, split_once, train_on_digits


def pytest_configure(config):
    # Before any fixture is built, so session fixtures do not depend on which test asked for them first.
    seed_everything(0)
    # Part times measured by profile --measure are kept for this run only, never in the user's cache.
    os.environ["DATAMIX_CACHE_DIR"] = tempfile.mkdtemp(prefix="datamix-test-cache-")


def pytest_unconfigure(config):
    shutil.rmtree(os.environ.get("DATAMIX_CACHE_DIR", ""), ignore_errors=True)


@pytest.fixture(autouse=True)
def _deterministic():
    seed_everything(0)


@pytest.fixture(scope="session")
def small_cnn_weights(tmp_path_factory):
    """The small CNN trained on digits at 32x32 (cached for the test session)."""
    from examples.models import small_cnn

    path = tmp_path_factory.mktemp("weights") / "small_cnn_digits.pt"
    acc = train_on_digits(small_cnn(), (1, 32, 32), epochs=8, out=path)
    assert acc >= MIN_ORIGINAL_ACCURACY, f"the fixture model did not learn: held-out accuracy {acc:.3f}"
    return path


@pytest.fixture(scope="session")
def affine_weights(tmp_path_factory):
    """The affine-cloud oracle model trained on 8x8 digits."""
    from tests.helpers.oracle_models import affine_cloud

    path = tmp_path_factory.mktemp("weights") / "affine_digits.pt"
    acc = train_on_digits(affine_cloud(), (1, 8, 8), epochs=15, out=path)
    assert acc >= MIN_ORIGINAL_ACCURACY, f"the oracle model did not learn: held-out accuracy {acc:.3f}"
    return path


@pytest.fixture(scope="session")
def small_split(tmp_path_factory, small_cnn_weights):
    """A mixing-aware split of the trained small CNN with every artifact, made once per test session."""
    from datamix_cli.training.finetune import FinetuneConfig

    return split_once(
        tmp_path_factory, "small-split", f"{EXAMPLES_FILE}:small_cnn", small_cnn_weights,
        input_shape=(1, 1, 32, 32), training=FinetuneConfig(epochs=4, seed=0, validation=0.0),  # the last epoch: the model the serving tests were sized on
    )


@pytest.fixture(scope="session")
def codec_split(tmp_path_factory, small_cnn_weights):
    """The small CNN with a 4-channel, stride-2 bottleneck, the int8 uplink and the fp16 downlink (made once)."""
    from datamix_cli.protocol.bottleneck import BottleneckConfig
    from datamix_cli.protocol.mixing import MixingConfig
    from datamix_cli.training.finetune import FinetuneConfig

    return split_once(
        tmp_path_factory, "codec-split", f"{EXAMPLES_FILE}:small_cnn", small_cnn_weights, input_shape=(1, 1, 32, 32),
        training=FinetuneConfig(epochs=4, seed=0, validation=0.0), mixing=MixingConfig(uplink="int8", downlink="fp16"),
        bottleneck=BottleneckConfig(4, 2),
    )


@pytest.fixture(scope="session")
def affine_split(tmp_path_factory, affine_weights):
    """A split of the affine-cloud oracle model, not fine-tuned, so the source model is the split's model."""
    from tests.helpers.oracle_models import HEAD_CUT, TAIL_CUT

    from datamix_cli.training.finetune import FinetuneConfig
    from datamix_cli.pipeline.export import ExportConfig
    from exporters import registered_names

    return split_once(
        tmp_path_factory, "affine-split", f"{ORACLE_FILE}:affine_cloud", affine_weights,
        head_cut=HEAD_CUT, tail_cut=TAIL_CUT, budget=1.0, training=FinetuneConfig(epochs=0),
        export=ExportConfig(formats=tuple(registered_names("head")), cloud_formats=tuple(registered_names("cloud"))),  # every format, against the oracle
    )
