"""Edge times from the real device: the candidates exported to time there (ONNX and TFLite), and the timings read
back (JSON, CSV, TFLite benchmark_model's log) against figures written by hand."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from datamix_cli.errors import ConfigError
from datamix_cli.main import app
from tests.helpers import EXAMPLES_FILE

SMALL = f"{EXAMPLES_FILE}:small_cnn"


@pytest.fixture(scope="module")
def small_profile():
    from datamix_cli.model.loading import ModelSource, load_model
    from partitioners.graph import trace_model
    from partitioners.profile import profile_model
    from partitioners.select import choose_split

    profile = profile_model(trace_model(load_model(ModelSource(SMALL))), (1, 1, 32, 32))
    return profile, choose_split(profile, 0.2, 4)


@pytest.mark.parametrize(("text", "message"), [
    ('{"head": {"no-such-cut": 1.0}, "tail": 0.1}', "names cuts the model has no candidate head at: no-such-cut"),
    ('{"head": {}, "tail": 0.1}', "misses the chosen cut"),
    ('{"head": {"CHOSEN": -1}, "tail": 0.1}', "must be positive numbers"),
    ('{"head": {"CHOSEN": 1}}', "must be positive numbers"),
    ('{"head": {"CHOSEN": 1}, "tail": 0.1, "unit": "us"}', "unit must be ms or s"),
    ("CHOSEN,abc\ntail,0.1\n", "could not convert"),
])
def test_bad_device_times_are_refused(tmp_path, small_profile, text, message):
    from datamix_cli.pipeline.device_times import read_device_times

    profile, decision = small_profile
    path = tmp_path / "times.json"
    path.write_text(text.replace("CHOSEN", decision.head_cut.name))
    with pytest.raises(ConfigError, match=message):
        read_device_times(path, profile, decision)


def test_device_times_from_csv_and_json_agree(tmp_path, small_profile):
    from datamix_cli.pipeline.device_times import read_device_times

    profile, decision = small_profile
    cut = decision.head_cut.name
    (tmp_path / "t.csv").write_text(f"part,ms\n{cut},2.5\ntail,0.5\nwhole,9\n")
    (tmp_path / "t.json").write_text(f'{{"unit": "s", "head": {{"{cut}": 0.0025}}, "tail": 0.0005, "whole": 0.009}}')
    from_csv, from_json = (read_device_times(tmp_path / name, profile, decision) for name in ("t.csv", "t.json"))
    for times in (from_csv, from_json):
        assert times["head"] == {cut: pytest.approx(0.0025)} and times["tail"] == pytest.approx(0.0005) and times["whole"] == pytest.approx(0.009)


def test_exported_candidates_run_and_their_device_times_drive_the_estimate(tmp_path):
    """Every candidate is written and runs at its listed shapes; timings given for two cuts give a table of those
    two, whose edge stages are the given milliseconds."""

    import onnxruntime as ort

    args = ["profile", SMALL, "--input-shape", "1,1,32,32", "--budget", "1", "--tail-cut", "4"]  # five candidate heads
    result = CliRunner().invoke(app, [*args, "--export-candidates", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    listing = json.loads((tmp_path / "c" / "candidates.json").read_text())
    assert len(listing["heads"]) >= 3
    for entry in [*listing["heads"], listing["tail"], listing["whole"]]:
        session = ort.InferenceSession(str(tmp_path / "c" / entry["file"]))
        feeds = {i.name: np.random.rand(*entry["inputs"][i.name]).astype(np.float32) for i in session.get_inputs()}
        assert np.isfinite(session.run(None, feeds)[0]).all()
    chosen = json.loads(CliRunner().invoke(app, [*args, "--json"]).output)["chosen"]["head_cut"]
    other = next(h["cut"] for h in listing["heads"] if h["cut"] != chosen)
    (tmp_path / "t.json").write_text(json.dumps({"head": {chosen: 7.0, other: 3.0}, "tail": 1.0, "whole": 20.0}))
    result = CliRunner().invoke(app, [*args, "--link", "wifi", "--device-times", str(tmp_path / "t.json"), "--json"])
    assert result.exit_code == 0, result.output
    latency = json.loads(result.output)["latency"]
    rows = {r["cut"]: r["latency"] for r in latency["cuts"]}
    assert set(rows) == {chosen, other}
    assert rows[chosen]["edge_head_mix"] == pytest.approx(0.007) and rows[other]["edge_demix_tail"] == pytest.approx(0.001)
    assert latency["baselines"]["edge_only"]["total"] == pytest.approx(0.020)
    # onnxruntime_perf_test's log, each run after a line naming its file (one run from a release without P50).
    files = {h["cut"]: h["file"] for h in listing["heads"]}
    log = (f"== /data/local/tmp/{files[chosen]}\n{perf_test_log(0.0042, 4.9)}{files[other]}\n{perf_test_log(None, 2.5)}"
           f"{listing['tail']['file']}\n{perf_test_log(0.0006, 0.7)}whole.onnx:\n{perf_test_log(0.011, 12.0)}")
    (tmp_path / "c" / "times.log").write_text(log)
    result = CliRunner().invoke(app, [*args, "--link", "wifi", "--device-times", str(tmp_path / "c" / "times.log"), "--json"])
    assert result.exit_code == 0, result.output
    latency = json.loads(result.output)["latency"]
    rows = {r["cut"]: r["latency"] for r in latency["cuts"]}
    assert rows[chosen]["edge_head_mix"] == pytest.approx(0.0042) and rows[other]["edge_head_mix"] == pytest.approx(0.0025)
    assert rows[chosen]["edge_demix_tail"] == pytest.approx(0.0006) and latency["baselines"]["edge_only"]["total"] == pytest.approx(0.011)


def perf_test_log(p50_s: float | None, avg_ms: float) -> str:
    """One run of onnxruntime_perf_test as it prints it (``p50_s=None``: a release that prints no percentiles)."""
    text = ("Session creation time cost: 0.0102 s\nFirst inference time cost: 9 ms\nTotal inference time cost: 0.5 s\n"
            f"Total inference requests: 100\nAverage inference time cost: {avg_ms} ms\nTotal inference run time: 0.5 s\n"
            "Number of inferences per second: 200\nAvg CPU usage: 96 %\nPeak working set size: 36696064 bytes\n")
    if p50_s is not None:
        text += f"Runs:100\nMin Latency: 0.0001 s\nMax Latency: 0.09 s\nP50 Latency: {p50_s} s\nP90 Latency: 0.08 s\nP99 Latency: 0.09 s\n"
    return text




def benchmark_log(graph: str, warmup_median_us: float, median_us: float, avg_us: float, old: bool = False) -> str:
    """One run of TFLite's benchmark_model as it logs it (the 2.1x form, or with ``old`` the form before medians)."""
    if old:
        return (f"STARTING!\nGraph: [{graph}]\nLoaded model {graph}\ncount=5 first=900 curr=800 min=790 max=900 avg={warmup_median_us} std=40\n"
                f"count=50 first=800 curr=790 min=780 max=820 avg={avg_us} std=9\n\n"
                f"Average inference timings in us: Warmup: {warmup_median_us}, Init: 4108, Inference: {avg_us}\n")
    return (f"INFO: STARTING!\nINFO: Log parameter values verbosely: [0]\nINFO: Num threads: [1]\nINFO: Graph: [{graph}]\n"
            f"INFO: Signature to run: []\nINFO: Loaded model {graph}\nINFO: The input model file size (MB): 0.02\n"
            "INFO: Initialized session in 1.2ms.\nINFO: Running benchmark for at least 1 iterations and at least 0.5 seconds\n"
            f"INFO: count=9 first=2000 curr=1500 min=1400 max=2000 avg=1600 std=100 p5=1400 median={warmup_median_us} p95=2000\n\n"
            "INFO: Running benchmark for at least 50 iterations and at least 1 seconds\n"
            f"INFO: count=50 first=1500 curr=1450 min=1400 max=1700 avg={avg_us} std=20 p5=1410 median={median_us} p95=1600\n\n"
            f"INFO: Inference timings in us: Init: 1200, First inference: 2000, Warmup (avg): 1600, Inference (avg): {avg_us}\n"
            "INFO: Memory footprint delta from the start of the tool (MB): init=2.1 overall=2.5\n")


def test_exported_tflite_candidates_run_and_benchmark_model_log_drives_the_estimate(tmp_path):
    """--runtime tflite writes every candidate as TFLite that runs at its listed shapes; a benchmark_model log of
    them (paths as on the phone, one run in the older format) gives each part the median of its timed runs
    (the mean where no median is printed), as the edge stages of the estimate."""
    from ai_edge_litert.interpreter import Interpreter

    folder = tmp_path / "c"
    args = ["profile", SMALL, "--input-shape", "1,1,32,32", "--budget", "1", "--tail-cut", "4"]  # five candidate heads
    result = CliRunner().invoke(app, [*args, "--runtime", "tflite", "--export-candidates", str(folder)])
    assert result.exit_code == 0, result.output
    listing = json.loads((folder / "candidates.json").read_text())
    assert listing["runtime"] == "tflite" and len(listing["heads"]) >= 3
    for entry in [*listing["heads"], listing["tail"], listing["whole"]]:
        assert entry["file"].endswith(".tflite")
        runner = Interpreter(model_path=str(folder / entry["file"])).get_signature_runner()
        arrays = [np.random.rand(*shape).astype(np.float32) for shape in entry["inputs"].values()]
        assert np.isfinite(next(iter(runner(**{f"args_{i}": a for i, a in enumerate(arrays)}).values()))).all()
    chosen = json.loads(CliRunner().invoke(app, [*args, "--json"]).output)["chosen"]["head_cut"]
    first = next(h for h in listing["heads"] if h["cut"] == chosen)
    second = next(h for h in listing["heads"] if h["cut"] != chosen)
    log = (benchmark_log(f"/data/local/tmp/{first['file']}", 9999, 1500, 1620)
           + benchmark_log(f"/data/local/tmp/{second['file']}", 9999, 0, 2400, old=True)
           + benchmark_log(listing["tail"]["file"], 9999, 300, 350) + benchmark_log(listing["whole"]["file"], 9999, 8000, 8100))
    (folder / "times.log").write_text(log)
    result = CliRunner().invoke(app, [*args, "--link", "wifi", "--device-times", str(folder / "times.log"), "--json"])
    assert result.exit_code == 0, result.output
    latency = json.loads(result.output)["latency"]
    rows = {r["cut"]: r["latency"] for r in latency["cuts"]}
    assert set(rows) == {first["cut"], second["cut"]}
    assert rows[first["cut"]]["edge_head_mix"] == pytest.approx(0.0015) and rows[second["cut"]]["edge_head_mix"] == pytest.approx(0.0024)
    assert rows[first["cut"]]["edge_demix_tail"] == pytest.approx(0.0003) and latency["baselines"]["edge_only"]["total"] == pytest.approx(0.008)


@pytest.mark.parametrize(("listing", "log", "message"), [
    (None, "Graph: [head-00.tflite]\ncount=50 median=100\n", "put the log in the --export-candidates folder"),
    ({"tail_cut": "TAIL"}, "Graph: [head-07.tflite]\ncount=50 avg=1 median=100\n", "the log times head-07.tflite, which candidates.json does not list"),
    ({"tail_cut": "TAIL"}, "Graph: [head-00.tflite]\nERROR: failed to allocate tensors\n", "the run of head-00.tflite has no inference timings"),
    ({"tail_cut": "other"}, "Graph: [head-00.tflite]\ncount=50 avg=1 median=100\n", "exported for tail cut 'other'"),
    ({"tail_cut": "TAIL"}, "Average inference time cost: 1 ms\n", "put a line naming each file before its run"),
])
def test_bad_benchmark_logs_are_refused(tmp_path, small_profile, listing, log, message):
    from datamix_cli.pipeline.device_times import read_device_times

    profile, decision = small_profile
    if listing is not None:
        listing = {"tail_cut": listing["tail_cut"].replace("TAIL", decision.tail_cut.name), "heads": [{"cut": decision.head_cut.name, "file": "head-00.tflite"}],
                   "tail": {"file": "tail.tflite"}, "whole": {"file": "whole.tflite"}}
        (tmp_path / "candidates.json").write_text(json.dumps(listing))
    (tmp_path / "times.log").write_text(log)
    with pytest.raises(ConfigError, match=message):
        read_device_times(tmp_path / "times.log", profile, decision)
