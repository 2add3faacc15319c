"""`optin run` (the whole chain) and the latency re-tune, on a tiny model with real ONNX Runtime."""
import json
import subprocess
import sys

import pytest

from conftest import write_tiny_folder
from profiling.latency_table import _fit, block_table, latency_cost_model


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "optin.cli", *args], capture_output=True, text=True, timeout=900)


def test_block_table_grows_with_width():
    t = block_table(hidden=64, head_dim=16, num_heads=4, ffn_size=256, batch=4, seq=32, iters=20, warmup=2)
    assert list(t["attention_ms"]) == [1, 2, 3, 4] and list(t["ffn_ms"]) == [64, 128, 192, 256]
    cm = latency_cost_model(t, num_layers=3)
    assert cm.per_head[0] > 0 and cm.per_neuron[0] > 0 and len(cm.per_head) == 3
    assert cm.total([4] * 3, [256] * 3) > cm.total([1] * 3, [64] * 3)


def test_fit_recovers_a_line():
    icpt, slope = _fit({1: 3.0, 2: 5.0, 4: 9.0})
    assert icpt == pytest.approx(1.0) and slope == pytest.approx(2.0)


def test_run_chain_writes_every_report(tiny_folders, tiny_csv, tmp_path):
    out = tmp_path / "run"
    r = run_cli("run", str(tiny_folders["bert"]), "--data", str(tiny_csv), "--flops", "0.5", "--out", str(out),
                "--calib", "16", "--group-size", "8", "--max-length", "16", "--batch", "2", "--seq", "16",
                "--iters", "20", "--min-speedup", "0.01", "--no-fvcore")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "run.json").read_text())
    for f in rep["reports"]:
        assert (out / f).exists(), f
    assert rep["parity"]["max_abs_diff"] <= 1e-4 and rep["gate"]["passed"]
    assert rep["speedup"]["mac_implied"] == pytest.approx(1 / rep["macs"]["ratio"], rel=1e-3)
    prof = json.loads((out / "profile.json").read_text())
    assert not prof["dense"]["dir"].startswith("/")  # relative: the folder was renamed after profiling
    # an impossible gate fails the run with exit code 1, and still leaves a complete folder
    r = run_cli("run", str(tiny_folders["bert"]), "--data", str(tiny_csv), "--flops", "0.5", "--out",
                str(tmp_path / "fail"), "--calib", "16", "--group-size", "8", "--max-length", "16",
                "--batch", "2", "--seq", "16", "--iters", "20", "--min-speedup", "1000", "--no-fvcore")
    assert r.returncode == 1, r.stderr[-2000:]
    assert json.loads((tmp_path / "fail" / "gate.json").read_text())["passed"] is False


def test_latency_retune_records_rounds(tiny_csv, tmp_path):
    # wide enough that the blocks' compute, not per-call overhead, sets the latency table's ceiling
    model = write_tiny_folder(tmp_path / "small", "bert", hidden=128, ffn=512, layers=2)
    out = tmp_path / "lat"
    r = run_cli("prune", str(model), "--data", str(tiny_csv), "--latency-target", "1.15",
                "--retune-rounds", "3", "--out", str(out), "--calib", "16", "--group-size", "64",
                "--max-length", "64", "--batch", "8", "--seq", "64", "--no-fvcore")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    rt = rep["retune"]
    rounds = rt["rounds"]
    assert rt["target"] == 1.15 and rt["tolerance"] == 0.05 and 1 <= len(rounds) <= 9
    assert rt["rounds_refit"] is False  # float32: the weights do not change the speed, masks only
    assert sum(not x.get("reused_round") for x in rounds) <= 3
    assert rt["met"] == (abs(rt["measured"] - 1.15) <= 0.05 * 1.15) and rt["stop"] and rt["note"]
    for x in rounds:
        lo, hi = x["ci95"]
        assert lo <= x["measured_speedup"] <= hi and x["band"] in ("within", "below", "above")
    for prev, nxt in zip(rounds, rounds[1:]):  # the goal moves towards the target, from either side
        if prev["band"] == "below" and all(p["band"] != "above" for p in rounds[:rounds.index(nxt)]):
            assert nxt["goal"] > prev["goal"]
        if prev["band"] == "above" and all(p["band"] != "below" for p in rounds[:rounds.index(nxt)]):
            assert nxt["goal"] < prev["goal"]
    chosen = rounds[rt["chosen_round"] - 1]
    assert rt["measured"] == chosen["measured_speedup"]
    assert rep["kept"]["heads"] == chosen["kept_heads"] and rep["kept"]["neurons"] == chosen["kept_neurons"]


def test_int8_latency_rounds_hold_the_refit_weights(tmp_path):
    """At INT8 which nodes stay in float depends on the weights, so a latency round's model is
    re-fit as the final one will be: its folder holds exactly the weights narrow + re-fit give."""
    import copy

    import torch

    from conftest import awkward_spec, tiny_batches
    from optin.adapters import adapter_for
    from optin.io import load_model, load_pruned
    from optin.narrow import narrow
    from optin.reconstruct import ReconConfig, reconstruct
    from optin.retune import _round_folder

    model, tok = load_model(str(write_tiny_folder(tmp_path / "m", "bert")))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spec, batches, cfg = awkward_spec("bert"), tiny_batches(model_type="bert"), ReconConfig()
    extra = {"seq_len": 10, "max_length": 10, "source": str(tmp_path / "m")}
    refit = lambda dense, pruned, s: reconstruct(dense, pruned, batches, s, cfg)  # noqa: E731
    rounds = [load_pruned(_round_folder(spec, model, type(adapter_for(model)), tok, str(tmp_path), extra, r)).state_dict()
              for r in (refit, None)]
    final = copy.deepcopy(model)
    narrow(adapter_for(final), spec)
    reconstruct(adapter_for(copy.deepcopy(model)), adapter_for(final), batches, spec, cfg)
    want = final.state_dict()
    assert set(rounds[0]) == set(want) and all(torch.equal(rounds[0][k], want[k]) for k in want)
    assert any(not torch.equal(rounds[1][k], want[k]) for k in want)  # masks only would be another model
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the dense model is untouched


def test_run_int8_chain(tiny_csv, tmp_path):
    """prune → export → INT8 (static) → profile against dense float32 and dense INT8 → gate on
    speed and accuracy; the dense INT8 engine is built the same way, in DIR/dense-int8."""
    from conftest import write_tiny_csv

    data = write_tiny_csv(tmp_path / "data.csv", n=300)
    model = write_tiny_folder(tmp_path / "m", "bert")
    out = tmp_path / "run8"
    r = run_cli("run", str(model), "--data", str(data), "--flops", "0.5", "--out", str(out), "--calib", "32",
                "--group-size", "8", "--max-length", "16", "--batch", "2", "--seq", "16", "--iters", "20",
                "--min-speedup", "0.01", "--max-accuracy-drop", "100", "--no-fvcore", "--int8", "--int8-mode",
                "static", "--threads", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "run.json").read_text())
    assert rep["precision"] == "int8" and rep["quantization"]["mode"] == "static"
    assert rep["engine_accuracy"]["available"] and rep["gate"]["passed"] and rep["gate"]["max_accuracy_drop"] == 100
    prof = json.loads((out / "profile.json").read_text())
    assert prof["precision"] == "int8" and prof["session"]["engine_file"] == "engine/model.int8.onnx"
    assert prof["dense"]["precision"] == "fp32" and prof["same_precision"]["precision"] == "int8"
    sp = prof["same_precision"]["speedup"]
    assert rep["speedup_same_precision"] == sp and sp["reference"] == "dense int8"
    dense8 = json.loads((out / "dense-int8" / "engine.json").read_text())
    assert dense8["precision"] == "int8" and dense8["config"]["quant"] == json.loads(
        (out / "engine.json").read_text())["config"]["quant"]
    assert dense8["accuracy"]["n"] == rep["engine_accuracy"]["n"]  # the same test examples
    # an accuracy gate it cannot pass fails the run (exit 1) and still leaves a complete folder
    r = run_cli("run", str(model), "--data", str(data), "--flops", "0.5", "--out", str(tmp_path / "f8"),
                "--calib", "32", "--group-size", "8", "--max-length", "16", "--batch", "2", "--seq", "16",
                "--iters", "20", "--max-accuracy-drop", "-100", "--no-fvcore", "--int8", "--threads", "1")
    assert r.returncode == 1, r.stderr[-2000:]
    assert "accuracy drop vs dense" in json.loads((tmp_path / "f8" / "gate.json").read_text())["reasons"][0]


def test_unreachable_latency_target_is_an_error(tiny_folders, tiny_csv, tmp_path):
    r = run_cli("prune", str(tiny_folders["bert"]), "--data", str(tiny_csv), "--latency-target", "500",
                "--out", str(tmp_path / "x"), "--calib", "16", "--max-length", "16", "--batch", "2", "--seq", "16",
                "--no-fvcore")
    assert r.returncode == 2 and "beyond what pruning heads and neurons can reach" in r.stderr
    assert not (tmp_path / "x").exists()


def test_latency_target_must_exceed_one(tiny_folders, tiny_csv, tmp_path):
    r = run_cli("prune", str(tiny_folders["bert"]), "--data", str(tiny_csv), "--latency-target", "0.8",
                "--out", str(tmp_path / "x"), "--no-fvcore")
    assert r.returncode == 2 and "must exceed 1" in r.stderr
    assert not (tmp_path / "x").exists()
