"""The real embedded model end to end through the CLI: minilm-rt at 60% of its MACs.

Builds the zoo model on first use (about 8-10 minutes on 2 cores, then cached)."""
import json
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.slow


def test_minilm_rt_prune_060(tmp_path):
    out = tmp_path / "rt"
    r = subprocess.run([sys.executable, "-m", "optin.cli", "prune", "minilm-rt", "--data", "rotten-tomatoes",
                        "--flops", "0.6", "--out", str(out), "--eval-limit", "2000"],
                       capture_output=True, text=True, timeout=3000)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    m, acc = rep["macs"], rep["accuracy"]
    assert m["pruned"] <= 0.6 * m["dense"]
    # the analytic count and fvcore agree within 2% (both MACs, eager attention)
    assert abs(m["fvcore_dense"] - m["dense"]) / m["dense"] < 0.02
    assert abs(m["fvcore_pruned"] - m["pruned"]) / m["pruned"] < 0.02
    assert acc["dense"] >= 0.80
    assert acc["dense"] - acc["pruned"] <= 0.02  # ≤1 point on the full split; 2000 examples here
    assert sum(rep["kept"]["heads"]) < 72 and sum(rep["kept"]["neurons"]) < 6 * 1536

    from optin import load_pruned
    from optin.io import load_model

    pruned = load_pruned(str(out))
    dense, tok = load_model(str(rep["model_path"]))
    enc = dict(tok(["a gorgeous, witty, seductive movie.", "the plot is nothing but boilerplate"],
                   padding=True, return_tensors="pt"))
    with torch.no_grad():
        assert pruned(**enc).logits.shape == dense(**enc).logits.shape
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in dense.parameters())
