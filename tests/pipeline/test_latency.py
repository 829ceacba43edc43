"""The latency model against figures computed by hand, the link parser's refusals, and the objective's choice."""

import json

import pytest
from typer.testing import CliRunner

from datamix_cli.errors import ConfigError
from datamix_cli.main import app
from datamix_cli.pipeline.latency import LINKS, Link, Radio, choose, energy, parse_link, pareto, stages, transfer_s
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


def test_each_timed_run_follows_an_idle_pause_that_is_not_timed(monkeypatch):
    """A part runs once per request, after the device waited on the network: median_s sleeps before every timed run
    (not the warm-up) and keeps the sleep out of the figure. A fake clock: each run takes 2 ms, each sleep what it asks."""
    from datamix_cli.pipeline import latency

    clock, sleeps = [0.0], []
    monkeypatch.setattr(latency.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(latency.time, "sleep", lambda s: (sleeps.append(s), clock.__setitem__(0, clock[0] + s)))

    def run():
        clock[0] += 0.002

    assert latency.median_s(run, (), runs=7, warmup=3, idle_s=0.05) == pytest.approx(0.002)
    assert sleeps == [0.05] * 7
    assert latency.IDLE_S > 0


def test_energy_is_compute_power_times_edge_time_plus_the_radio_power_model_while_transferring():
    """BottleNet's 4G row: 438.39 mW/Mbps and 1288.04 mW uplink (Huang et al.'s 51.97 mW/Mbps downlink)."""
    assert LINKS["4g"].radio == Radio(438.39, 51.97, 1288.04)
    assert (LINKS["3g"].radio.up_mw_per_mbps, LINKS["wifi"].radio.beta_mw) == (868.98, 132.86)
    link = Link("test", up_mbps=5.0, down_mbps=20.0, rtt_ms=50.0, radio=Radio(400.0, 50.0, 1000.0))
    s = stages(0.002, 0.010, 0.001, up_bytes=625_000, down_bytes=250_000, link=link)  # 1 s up, 0.1 s down
    e = energy(s, link, device_power_w=2.5)
    assert e["edge_compute"] == pytest.approx(2.5 * 0.003)  # head + tail, not the cloud
    assert e["uplink"] == pytest.approx((400 * 5 + 1000) / 1e3 * 1.0)  # 3 W for 1 s
    assert e["downlink"] == pytest.approx((50 * 20 + 1000) / 1e3 * 0.1)  # 2 W for 0.1 s
    assert e["total"] == pytest.approx(0.0075 + 3.0 + 0.2)
    rows = [dict(r, energy={"total": t}) for r, t in zip(ROWS, (0.1, 5.0, 2.0, 3.0, 1.0))]
    assert choose(rows, "energy", 1.0)["cut"] == "d" and choose(rows, "energy", 0.5)["cut"] == "b"


def test_profile_adds_the_energy_of_every_cut_and_baseline_and_minimises_it():
    result = CliRunner().invoke(app, ["profile", SMALL, "--input-shape", "1,1,32,32", "--link", "3g", "--device-power", "3", "--objective", "energy",
                                      "--budget", "1", "--json"])
    assert result.exit_code == 0, result.output
    latency = json.loads(result.output)["latency"]
    radio = LINKS["3g"].radio
    for r in latency["cuts"]:
        t = r["latency"]
        expected = 3 * (t["edge_head_mix"] + t["edge_demix_tail"]) + radio.watts(1.1, True) * t["uplink"] + radio.watts(1.1, False) * t["downlink"]
        assert r["energy"]["total"] == pytest.approx(expected)
    assert latency["chosen"] == min((r for r in latency["cuts"] if r["head_flops"] > 0), key=lambda r: r["energy"]["total"])["cut"]
    assert latency["baselines"]["edge_only"]["energy"]["total"] == pytest.approx(3 * latency["baselines"]["edge_only"]["total"])
    assert latency["link"]["radio_mw"] == {"up_per_mbps": 868.98, "down_per_mbps": 122.12, "base": 817.88}


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
        choose(ROWS, "joules", 1.0)


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
    assert objective["runtime"] == "onnx"


def test_split_latency_objective_keeps_to_the_uplink_limit(tmp_path, small_cnn_weights, monkeypatch):
    """--objective latency with --max-uplink-bytes: the fastest cut among those that send at most the limit, not the
    fastest overall. The times are stubbed (fixed, so the choice cannot flip with the machine's load); with a fast
    cloud on a 1 Gbit/s link the edge time dominates, and the fastest cut is an early one that sends more."""
    from datamix_cli.model.loading import ModelSource
    from datamix_cli.pipeline import latency
    from datamix_cli.pipeline.export import ExportConfig
    from datamix_cli.pipeline.split import SplitConfig, run_split
    from datamix_cli.training.finetune import FinetuneConfig

    monkeypatch.setattr(latency, "edge_seconds", lambda module, example, threads, runtime="onnx": 0.01)
    monkeypatch.setattr(latency, "torch_seconds", lambda module, example: 0.01)
    options = latency.LatencyOptions(parse_link("1000:1"), cloud_speedup=100, cache=False)

    def build(limit, out):
        return run_split(SplitConfig(source=ModelSource(SMALL, weights=small_cnn_weights), data="digits", out=tmp_path / out, input_shape=(1, 1, 32, 32),
                                     budget=1.0, training=FinetuneConfig(epochs=0), export=ExportConfig(formats=("onnx",)), objective="latency",
                                     latency=options, max_uplink_bytes=limit)).manifest

    free = build(None, "free").split["objective"]
    result = CliRunner().invoke(app, ["profile", SMALL, "--input-shape", "1,1,32,32", "--link", "1000:1", "--cloud-speedup", "100", "--no-cache", "--budget", "1", "--json"])
    table = json.loads(result.output)["latency"]
    sent = {r["cut"]: r["uplink_bytes_per_input"] for r in table["cuts"]}
    limit = int(sent[free["chosen"]]) - 1  # the unconstrained choice no longer fits
    objective = build(limit, "kept").split["objective"]
    assert objective["max_uplink_bytes"] == limit and sent[objective["chosen"]] <= limit
    fitting = [r for r in table["cuts"] if r["head_flops"] > 0 and r["uplink_bytes_per_input"] <= limit]
    assert objective["chosen"] == min(fitting, key=lambda r: r["latency"]["total"])["cut"] != free["chosen"]
    smallest = min(sent[r["cut"]] for r in table["cuts"] if r["head_flops"] > 0)
    with pytest.raises(ConfigError, match=f"no cut within the budget 1 and 100 uplink bytes per input \\(the smallest within it sends {smallest:.0f} B\\)"):
        build(100, "none")
    assert not (tmp_path / "none").exists()


def test_split_measures_on_the_runtime_it_is_given(tmp_path, small_cnn_weights, monkeypatch):
    """split --measure --runtime tflite asks for every edge part's time on LiteRT, and the manifest says so (the
    timing itself is stubbed here: test_profile_measures_the_parts_on_tflite runs it)."""
    from datamix_cli.pipeline import latency

    timed = []
    monkeypatch.setattr(latency, "edge_seconds", lambda module, example, threads, runtime="onnx": timed.append(runtime) or 1e-3)
    out = tmp_path / "s"
    result = CliRunner().invoke(app, ["split", SMALL, "--weights", str(small_cnn_weights), "--data", "digits", "--input-shape", "1,1,32,32", "--out", str(out),
                                      "--epochs", "0", "--formats", "onnx", "--objective", "latency", "--link", "4g", "--measure", "--runtime", "tflite",
                                      "--allow-low-accuracy", "--json"])
    assert result.exit_code == 0, result.output
    assert timed and set(timed) == {"tflite"}
    assert json.loads(result.output)["split"]["objective"]["runtime"] == "tflite"


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
    timed = []  # each part measured (stubbed: what is timed, not how, is under test; test_profile_measures_* time for real)
    monkeypatch.setattr(latency, "edge_seconds", lambda *a, **kw: timed.append(1) or 1e-3)
    monkeypatch.setattr(latency, "torch_seconds", lambda *a, **kw: timed.append(1) or 2e-3)
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

    result = CliRunner().invoke(app, ["profile", SMALL, "--input-shape", "1,1,32,32", "--budget", "1", "--tail-cut", "4", "--link", "wifi", "--measure", "--runtime", "tflite", "--json"])
    assert result.exit_code == 0, result.output
    latency = json.loads(result.output)["latency"]
    assert latency["runtime"] == "tflite" and "tflite edge" in latency["times"] and latency["cache"]["measured"] > 0
    assert all(r["latency"]["edge_head_mix"] > 0 and r["latency"]["edge_demix_tail"] > 0 for r in latency["cuts"])
