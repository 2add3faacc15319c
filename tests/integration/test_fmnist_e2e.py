"""The Fashion-MNIST zoo models end to end through the CLI at 60% of their MACs (prune → ONNX
export with parity → ONNX Runtime → profile against dense): vit-fmnist (heads and neurons; and
with a quarter of the reduction from tokens) and resnet-fmnist (channels).

Trains each zoo model on first use (vit-fmnist about 20 minutes, resnet-fmnist about 10, on one
busy core; then cached) and needs the Debian package dataset-fashion-mnist."""
import json
import os
import subprocess
import sys

import pytest

from optin.images import FMNIST_DIR

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isdir(FMNIST_DIR),
                                 reason="apt-get install -y dataset-fashion-mnist")]


def _run(model, out, *args):
    """`optin run MODEL --data fashion-mnist --flops 0.6` → (run.json, report.json), checked for
    what every image model shares: budget, fvcore, the 10,000 test images, parity, a speedup."""
    r = subprocess.run([sys.executable, "-m", "optin.cli", "run", model, "--data", "fashion-mnist", "--flops", "0.6",
                        "--backend", "onnxruntime", "--out", str(out), "--iters", "100", *args],
                       capture_output=True, text=True, timeout=3600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    run, rep = (json.loads((out / f).read_text()) for f in ("run.json", "report.json"))
    m = run["macs"]
    assert m["pruned"] <= 0.6 * m["dense"] and m["ratio"] > 0.55
    assert abs(m["fvcore_dense"] - m["dense"]) / m["dense"] < 0.02
    assert run["accuracy"]["test_examples"] == 10000
    assert run["parity"]["max_abs_diff"] <= 1e-4 and "fashion-mnist" in run["parity"]["source"]
    assert run["speedup"]["measured"] > 1.0
    return run, rep


def test_vit_fmnist_run_060(tmp_path):
    run, _ = _run("vit-fmnist", tmp_path / "vit", "--method", "optin")
    acc = run["accuracy"]
    assert run["macs"]["seq_len"] == 17
    assert acc["dense"] >= 0.85                # measured 86.5%
    assert acc["dense"] - acc["pruned"] <= 0.01  # measured 0.1 point


def test_vit_fmnist_run_060_with_tokens(tmp_path):
    run, rep = _run("vit-fmnist", tmp_path / "vit-tokens", "--token-share", "0.25")
    tokens = rep["kept"]["tokens"]
    assert tokens[0] == 17 and tokens[-1] < 17 and tokens == sorted(tokens, reverse=True)
    assert abs(run["macs"]["fvcore_pruned"] / run["macs"]["fvcore_dense"] - run["macs"]["ratio"]) < 0.02
    assert run["accuracy"]["dense"] - run["accuracy"]["pruned"] <= 0.02  # measured 86.50 → 86.29%


def test_resnet_fmnist_run_060(tmp_path):
    run, rep = _run("resnet-fmnist", tmp_path / "resnet")
    m, acc = run["macs"], run["accuracy"]
    # conv and linear MACs exactly as fvcore counts them; fvcore's total adds BatchNorm and pooling
    assert m["pruned"] == m["fvcore_matmul_pruned"] and m["dense"] == m["fvcore_matmul_dense"]
    assert acc["dense"] >= 0.91  # measured 91.95%
    # measured 88.3% (optin-est, BatchNorm statistics re-estimated; 65.2% without, no retraining either way)
    assert acc["pruned"] >= 0.85 and rep["bn_recalibration"]["accuracy_before"] < acc["pruned"]
    assert run["kept"]["heads"] == [0] * 6
