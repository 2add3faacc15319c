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
                "--retune-rounds", "2", "--out", str(out), "--calib", "16", "--group-size", "64",
                "--max-length", "64", "--batch", "8", "--seq", "64", "--no-fvcore")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    rt = rep["retune"]
    assert rt["target"] == 1.15 and 1 <= len(rt["rounds"]) <= 2
    assert rt["met"] == (rt["measured"] >= 1.15)
    if len(rt["rounds"]) == 2:  # fell short in round 1: the goal was tightened by the shortfall
        r1 = rt["rounds"][0]
        assert rt["rounds"][1]["goal"] == pytest.approx(r1["goal"] * 1.15 / r1["measured_speedup"])
    chosen = max(rt["rounds"], key=lambda x: x["measured_speedup"])
    assert rt["measured"] == chosen["measured_speedup"]
    assert rep["kept"]["heads"] == chosen["kept_heads"] and rep["kept"]["neurons"] == chosen["kept_neurons"]


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
