"""The vision zoo model end to end through the CLI: vit-fmnist at 60% of its MACs on Fashion-MNIST.

Trains the zoo model on first use (about 20 minutes on one busy core, then cached) and needs the
Debian package dataset-fashion-mnist."""
import json
import os
import subprocess
import sys

import pytest

from optin.images import FMNIST_DIR

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isdir(FMNIST_DIR),
                                 reason="apt-get install -y dataset-fashion-mnist")]


def test_vit_fmnist_run_060(tmp_path):
    out = tmp_path / "vit"
    r = subprocess.run([sys.executable, "-m", "optin.cli", "run", "vit-fmnist", "--data", "fashion-mnist",
                        "--flops", "0.6", "--method", "optin", "--out", str(out), "--iters", "100"],
                       capture_output=True, text=True, timeout=3600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "run.json").read_text())
    m, acc = rep["macs"], rep["accuracy"]
    assert m["seq_len"] == 17 and m["pruned"] <= 0.6 * m["dense"]
    assert abs(m["fvcore_dense"] - m["dense"]) / m["dense"] < 0.02
    assert acc["test_examples"] == 10000 and acc["dense"] >= 0.85  # measured 86.5%
    assert acc["dense"] - acc["pruned"] <= 0.01                   # measured 0.1 point
    assert rep["parity"]["max_abs_diff"] <= 1e-4 and "fashion-mnist" in rep["parity"]["source"]
    assert rep["speedup"]["measured"] > 1.0
