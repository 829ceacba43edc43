"""The 0.1 import paths still work for one release, warn with the new path, and give the same objects."""

import importlib
import subprocess
import sys

import pytest

from datamix_cli._compat import MOVED, PACKAGE_NAMES

# One public name of each old module, and where it lives now.
NAMES = {
    "loading": ("ModelSource", "model.loading"), "preprocess": ("resize_and_crop", "data.geometry"),
    "inputs": ("read_inputs", "data.inputs"), "mixing": ("pad_with_decoys", "protocol.groups"),
    "edge_modules": ("HeadWithMix", "protocol.edge_modules"), "presets": ("resolve", "protocol.presets"),
    "distributed": ("World", "training.distributed"), "devices": ("resolve_device", "training.devices"),
    "profiling": ("run_profile", "pipeline.profile"), "splitting": ("state_dict_sha256", "model.identity"),
    "manifest": ("load_manifest", "artifacts.manifest"), "output": ("StagedFolder", "artifacts.staging"),
    "server": ("parse_input", "serving.oip"), "client": ("ServerError", "errors"), "loopback": ("free_port", "serving.loopback"),
    "deploy": ("write_kserve", "serving.deploy.kserve"), "attacks": ("span_search", "privacy.attacks.search"),
    "auditing": ("attack_group", "privacy.attacks.decoding"), "judging": ("summary", "privacy.metrics"),
    "data": ("fit_to_shape", "data.geometry"), "training": ("predict_mixed", "training.evaluation"),
}


def test_every_moved_module_is_covered_here():
    assert set(NAMES) == set(MOVED) | set(PACKAGE_NAMES)


@pytest.mark.parametrize("old", sorted(NAMES))
def test_an_old_path_gives_the_same_object_and_warns_with_the_new_one(old):
    name, new = NAMES[old]
    module = importlib.import_module(f"datamix_cli.{old}")
    with pytest.warns(DeprecationWarning, match=f"datamix_cli.{new}.{name}"):
        got = getattr(module, name)
    assert got is getattr(importlib.import_module(f"datamix_cli.{new}"), name)


def test_an_unknown_name_on_an_old_path_is_an_attribute_error():
    with pytest.raises(AttributeError, match="telepathy"):
        importlib.import_module("datamix_cli.mixing").telepathy


def test_importing_the_package_imports_no_torch():
    code = "import sys, datamix_cli, datamix_cli.mixing, datamix_cli.main; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
