"""The CLI through Typer's CliRunner: output formats and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from datamix_cli.main import app

from tests.helpers import EXAMPLES_FILE, ROOT

RESNET = f"{EXAMPLES_FILE}:resnet"
SHAPE = ["--input-shape", "1,1,32,32"]


@pytest.fixture
def runner():
    return CliRunner()


def test_profile_table_marks_the_chosen_split(runner):
    result = runner.invoke(app, ["profile", RESNET, *SHAPE], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "◀ head" in result.output and "◀ tail" in result.output
    assert "edge only" in result.output and "cloud only" in result.output
    assert "not counted" in result.output


def test_profile_json(runner):
    result = runner.invoke(app, ["profile", RESNET, *SHAPE, "--json", "--budget", "0.2", "--k", "4"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["total_flops"] == 2 * report["total_macs"] > 0
    cut = report["cut_points"][1]
    assert {"name", "flops_prefix", "activation_shape", "activation_bytes"} <= set(cut)
    chosen = report["chosen"]
    assert (chosen["head_cut"], chosen["tail_cut"]) == ("layer1.0", "flatten")
    assert chosen["edge_fraction"] <= 0.2
    assert chosen["edge_flops"] == chosen["head_flops"] + chosen["tail_flops"] + chosen["mix_flops"] + chosen["demix_flops"]


def test_profile_overrides_and_plot(runner, tmp_path):
    plot = tmp_path / "flops.png"
    args = ["profile", RESNET, *SHAPE, "--head-cut", "layer2", "--tail-cut", "pool", "--json", "--plot", str(plot)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["chosen"]["head_cut"] == "layer2"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_profile_takes_the_shape_from_a_pt2(runner, tmp_path):
    from examples.models import resnet

    path = tmp_path / "resnet.pt2"
    torch.export.save(torch.export.export(resnet().eval(), (torch.randn(1, 1, 32, 32),)), path)
    result = runner.invoke(app, ["profile", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["input_shape"] == [1, 1, 32, 32]


def test_profile_takes_the_shape_from_the_dataset(runner):
    result = runner.invoke(app, ["profile", RESNET, "--data", "digits", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["input_shape"] == [1, 1, 8, 8]


@pytest.fixture
def bad_weights(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"fc.weight": torch.zeros(1)}, path)
    return path


@pytest.fixture
def untraceable(tmp_path):
    path = tmp_path / "branchy.py"
    path.write_text(
        "import torch\n"
        "class B(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = torch.nn.Linear(4, 2)\n"
        "    def forward(self, x):\n        return self.fc(x) if x.sum() > 0 else self.fc(-x)\n"
        "def net():\n    return B()\n"
    )
    return f"{path}:net"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.py:net", *SHAPE], "model file not found"),
        (["missing_weights_spec", *SHAPE], "neither"),
        ([f"{EXAMPLES_FILE}:nope", *SHAPE], "factory 'nope' not found"),
        ([RESNET, "--weights", "WEIGHTS", *SHAPE], "do not fit the model: missing keys"),
        (["UNTRACEABLE", "--input-shape", "1,4"], ".pt2"),
        ([RESNET, "--input-shape", "1,3,32,32"], "fails on input shape"),
        ([RESNET, "--input-shape", "1,a,32"], "malformed input shape"),
        ([RESNET], "--input-shape"),
        ([RESNET, *SHAPE, "--budget", "0"], "(0, 1]"),
        ([RESNET, *SHAPE, "--budget", "1.5"], "(0, 1]"),
        ([RESNET, *SHAPE, "--budget", "0.0001"], "smallest achievable edge share"),
        ([RESNET, *SHAPE, "--head-cut", "nope"], "valid cuts: input, stem.0"),
        ([RESNET, *SHAPE, "--k", "1"], "between 2 and 64"),
        ([RESNET, *SHAPE, "--model-kwargs", "{bad"], "not valid JSON"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(runner, args, message, bad_weights, untraceable):
    args = [str(bad_weights) if a == "WEIGHTS" else untraceable if a == "UNTRACEABLE" else a for a in args]
    result = runner.invoke(app, ["profile", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert message in lines[0]


def test_debug_shows_the_traceback_and_plain_mode_does_not():
    cmd = [sys.executable, "-m", "datamix_cli.main", "profile", "missing.py:net", *SHAPE]
    debug = subprocess.run([*cmd[:3], "--debug", *cmd[3:]], cwd=ROOT, capture_output=True, text=True)
    plain = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert plain.returncode == 2 and "Traceback" not in plain.stdout + plain.stderr


def test_help_does_not_import_torch():
    code = (
        "import sys\nfrom datamix_cli.main import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'numpy', 'onnx', 'litert_torch') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert "HEAVY []" in out


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "pip", "show", "datamix"], capture_output=True, text=True)
    assert "Name: datamix" in result.stdout


def test_profile_costs_a_bottleneck_as_the_split_that_has_it(runner, codec_split):
    from datamix_cli.artifacts.manifest import load_manifest

    args = ["profile", f"{EXAMPLES_FILE}:small_cnn", *SHAPE, "--bottleneck", "4", "--bottleneck-stride", "2", "--uplink", "int8", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report, manifest = json.loads(result.output)["bottleneck"], load_manifest(codec_split)
    assert report["flops"] == manifest.flops  # the encoder on the edge, the decoder in the cloud, mixing on the code
    assert report["uplink"] == manifest.split["uplink"] and report["code_shape"] == [4, 8, 8]
    assert report["wire_bytes_per_input"] > manifest.split["uplink"]["bytes_per_sample"]  # the request's headers
    bad = runner.invoke(app, ["profile", f"{EXAMPLES_FILE}:small_cnn", *SHAPE, "--bottleneck", "0"])
    assert bad.exit_code == 2 and "between 1 and the cut's 16 channels" in bad.output


def test_every_command_prints_its_help():
    """Help text is Rich markup: an unescaped [/...] in an option's help (the link syntax) crashed --help."""
    from typer.testing import CliRunner

    from datamix_cli.main import app

    commands = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]
    assert {"profile", "split", "serve-local"} <= set(commands)
    for name in commands:
        result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "400"})
        assert result.exit_code == 0, (name, result.output[-500:], result.exception)
        assert "Usage" in result.output
        if name in ("profile", "split", "serve-local"):
            assert "MBPS[/DOWN_MBPS][:RTT_MS]" in result.output, name
