"""The latency model against figures computed by hand, the link parser's refusals, and the objective's choice."""

import pytest
from typer.testing import CliRunner

from datamix_cli.errors import ConfigError
from datamix_cli.main import app
from datamix_cli.pipeline.latency import LINKS, Link, choose, parse_link, pareto, stages, transfer_s
from tests.helpers import EXAMPLES_FILE

SMALL = f"{EXAMPLES_FILE}:small_cnn"


def test_stages_add_up_as_computed_by_hand():
    link = Link("test", up_mbps=5.85, down_mbps=20.0, rtt_ms=50.0)
    s = stages(0.002, 0.010, 0.001, up_bytes=65_635, down_bytes=1_000, link=link)
    assert s["uplink"] == pytest.approx(65_635 * 8 / 5.85e6)  # 89.757 ms
    assert s["uplink"] == pytest.approx(0.0897573, rel=1e-6)
    assert s["downlink"] == pytest.approx(0.0004)  # 8,000 bits at 20 Mbit/s
    assert s["rtt"] == pytest.approx(0.05)
    assert s["total"] == pytest.approx(0.002 + 0.0897573 + 0.05 + 0.010 + 0.0004 + 0.001, rel=1e-6)
    assert transfer_s(1_000_000, 8.0) == pytest.approx(1.0)


def test_link_presets_and_custom_links():
    assert (LINKS["3g"].up_mbps, LINKS["4g"].up_mbps, LINKS["wifi"].up_mbps) == (1.1, 5.85, 18.88)
    assert "BottleNet" in LINKS["4g"].source and parse_link("4G") == LINKS["4g"]
    custom = parse_link("10/40:30")
    assert (custom.up_mbps, custom.down_mbps, custom.rtt_ms) == (10, 40, 30)
    assert (parse_link("2.5").down_mbps, parse_link("2.5").rtt_ms) == (2.5, 0.0)


@pytest.mark.parametrize("text", ["5g", "0", "-1", "10/0", "10:-5", "fast", "nan", "10:inf"])
def test_bad_links_are_refused(text):
    with pytest.raises(ConfigError):
        parse_link(text)


def row(cut, head, edge, fraction, up, total):
    return {"cut": cut, "head_flops": head, "edge_flops": edge, "edge_fraction": fraction, "uplink_bytes_per_input": up, "latency": {"total": total}}


ROWS = [row("input", 0, 10, 0.001, 4_000, 0.05), row("a", 100, 110, 0.1, 60_000, 0.4), row("b", 300, 310, 0.3, 30_000, 0.2),
        row("c", 600, 610, 0.6, 10_000, 0.12), row("d", 900, 910, 0.9, 12_000, 0.15)]


def test_objectives_choose_within_the_budget_and_never_an_empty_head():
    assert choose(ROWS, "flops", 0.5)["cut"] == "b"  # the deepest within 0.5
    assert choose(ROWS, "latency", 0.5)["cut"] == "b"
    assert choose(ROWS, "latency", 1.0)["cut"] == "c"  # "input" is faster but sends mixed raw inputs
    assert choose(ROWS, "bytes", 1.0)["cut"] == "c"
    assert choose(ROWS, "latency", 1.0, max_uplink_bytes=11_000)["cut"] == "c"
    with pytest.raises(ConfigError, match="no cut within the budget 0.05"):
        choose(ROWS, "latency", 0.05)
    with pytest.raises(ConfigError, match="unknown --objective"):
        choose(ROWS, "energy", 1.0)


def test_pareto_keeps_what_no_cut_beats_on_latency_and_edge_flops():
    assert pareto(ROWS) == ["input"]  # the fastest and the cheapest: nothing else is on the front
    assert pareto(ROWS[1:]) == ["a", "b", "c"]  # d costs more edge FLOPs than c and is slower


def test_profile_estimates_every_cut_on_the_link_and_records_the_choice():
    import json

    result = CliRunner().invoke(app, ["profile", SMALL, "--input-shape", "1,1,32,32", "--link", "4g", "--objective", "latency", "--budget", "1", "--json"])
    assert result.exit_code == 0, result.output
    latency = json.loads(result.output)["latency"]
    assert latency["link"]["up_mbps"] == 5.85 and latency["objective"] == "latency"
    for r in latency["cuts"]:  # each network stage is the row's bytes at the link's rate, plus one RTT
        assert r["latency"]["uplink"] == pytest.approx(r["uplink_bytes_per_input"] * latency["k"] * 8 / 5.85e6)
        assert r["latency"]["rtt"] == pytest.approx(0.05)
    chosen = min((r for r in latency["cuts"] if r["head_flops"] > 0), key=lambda r: r["latency"]["total"])
    assert latency["chosen"] == chosen["cut"] and latency["chosen"] in latency["pareto"]
    assert set(latency["baselines"]) == {"edge_only", "cloud_only_uint8"}


@pytest.mark.parametrize(("args", "message"), [
    (["--link", "5g"], "unknown link '5g'"),
    (["--link", "0"], "rates must be > 0"),
    (["--objective", "latency"], "--objective latency needs --link"),
    (["--link", "4g", "--threads", "0"], "--threads must be > 0"),
    (["--link", "4g", "--runtime", "coreml"], "--runtime must be onnx or tflite, got 'coreml'"),
])
def test_profile_refuses_bad_link_options_in_one_line(args, message):
    result = CliRunner().invoke(app, ["profile", SMALL, "--input-shape", "1,1,32,32", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output


def test_split_builds_the_cut_the_latency_objective_picks_and_records_the_estimate(tmp_path, small_cnn_weights):
    """On 3G the bytes dominate: the objective picks the cut that sends the fewest, not the budget's deepest cut."""
    from datamix_cli.model.loading import ModelSource
    from datamix_cli.pipeline.export import ExportConfig
    from datamix_cli.pipeline.latency import LatencyOptions
    from datamix_cli.pipeline.split import SplitConfig, run_split
    from datamix_cli.training.finetune import FinetuneConfig

    manifest = run_split(SplitConfig(source=ModelSource(SMALL, weights=small_cnn_weights), data="digits", out=tmp_path / "s",
                                     input_shape=(1, 1, 32, 32), budget=0.5, training=FinetuneConfig(epochs=0),
                                     export=ExportConfig(formats=("onnx",)), objective="latency",
                                     latency=LatencyOptions(LINKS["3g"]))).manifest
    objective = manifest.split["objective"]
    assert objective["chosen"] == manifest.split["head_cut"] and objective["link"]["name"] == "3g"
    estimate, deepest = objective["estimate_s"], objective["flops_choice_estimate_s"]
    assert estimate["total"] <= deepest["total"]
    sent = manifest.split["uplink"]["bytes_per_sample"] * manifest.protocol["k"]
    assert sent * 8 / 1.1e6 < estimate["uplink"] < (sent + 1000) * 8 / 1.1e6  # the tensors, plus under 1 KB of HTTP


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
    from datamix_cli.pipeline.latency import read_device_times

    profile, decision = small_profile
    path = tmp_path / "times.json"
    path.write_text(text.replace("CHOSEN", decision.head_cut.name))
    with pytest.raises(ConfigError, match=message):
        read_device_times(path, profile, decision)


def test_device_times_from_csv_and_json_agree(tmp_path, small_profile):
    from datamix_cli.pipeline.latency import read_device_times

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
    import json

    import numpy as np
    import onnxruntime as ort

    args = ["profile", SMALL, "--input-shape", "1,1,32,32", "--budget", "1"]
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


def test_measured_part_times_are_reused_only_for_the_same_model_runtime_and_threads(tmp_path, monkeypatch):
    """A second --measure of the same model times nothing and gives the same table; other threads re-time the edge
    parts only; a changed weight re-times everything; a corrupt cache file is ignored and rewritten."""
    import torch

    from datamix_cli.model.loading import ModelSource, load_model
    from datamix_cli.pipeline import latency
    from datamix_cli.pipeline.latency import LatencyOptions, latency_table
    from partitioners.graph import trace_model
    from partitioners.profile import profile_model
    from partitioners.select import choose_split

    monkeypatch.setenv("DATAMIX_CACHE_DIR", str(tmp_path / "cache"))
    timed, real = [], latency.median_s
    monkeypatch.setattr(latency, "median_s", lambda *a, **kw: timed.append(1) or real(*a, runs=2, warmup=0))
    model = load_model(ModelSource(SMALL))

    def table(threads=1):
        traced = trace_model(model)
        profile = profile_model(traced, (1, 1, 32, 32))
        timed.clear()
        result = latency_table(SMALL, traced, profile, choose_split(profile, 0.2, 4), LatencyOptions(LINKS["4g"], measure=True, threads=threads), (1, 32, 32))
        return result, len(timed)

    first, n = table()
    parts = 2 * len(first["cuts"]) + 3  # a head and a cloud part per cut, the tail, the whole model on each side
    assert n == parts and first["cache"] == {"reused": 0, "measured": parts, "path": str(tmp_path / "cache" / "part-times.json")}
    again, n = table()
    assert n == 0 and again["cache"]["reused"] == parts and again["cuts"] == first["cuts"] and again["baselines"] == first["baselines"]
    _, n = table(threads=2)
    assert n == len(first["cuts"]) + 2  # heads, tail, whole model on the edge runtime; the cloud's torch times stand
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    _, n = table()
    assert n == parts
    (tmp_path / "cache" / "part-times.json").write_text("{not json")
    _, n = table()
    assert n == parts and table()[1] == 0


def test_profile_measures_the_parts_on_tflite():
    import json

    result = CliRunner().invoke(app, ["profile", SMALL, "--input-shape", "1,1,32,32", "--link", "wifi", "--measure", "--runtime", "tflite", "--json"])
    assert result.exit_code == 0, result.output
    latency = json.loads(result.output)["latency"]
    assert latency["runtime"] == "tflite" and "tflite edge" in latency["times"] and latency["cache"]["measured"] > 0
    assert all(r["latency"]["edge_head_mix"] > 0 and r["latency"]["edge_demix_tail"] > 0 for r in latency["cuts"])
