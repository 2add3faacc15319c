"""Measured ONNX Runtime CPU speedup over dense for every importance method's mask at the same
MAC budget (0.3 to 0.9): each mask is narrowed, saved, exported with parity, and timed against
the dense model interleaved (batch 8 × 64 real tokens, 2 threads, no spinning), one method after
another in this one process. The dense model is exported once and reused by every pair.
(common.method_model / save_for_export / time_vs_dense / plot_speed are shared with speed_tp.py.)

    python bench/speed_methods.py [--budgets 0.3,...,0.9] [--iters 200]

Writes bench/results/speed_methods.{json,png}."""
import argparse
import os
import shutil
import tempfile

from common import RESULTS, SEQ, SPEED_BATCH, method_model, plot_speed, save_for_export, setup, time_vs_dense

from optin.io import write_json
from optin.report import versions

ap = argparse.ArgumentParser()
ap.add_argument("--budgets", default="0.3,0.4,0.5,0.6,0.7,0.8,0.9")
ap.add_argument("--iters", type=int, default=200)
ap.add_argument("--methods", default="optin-est,optin,fisher,magnitude,random")
a = ap.parse_args()
S = setup(test=False)
rows = []
work = tempfile.mkdtemp(prefix="speed_methods.")
against = "minilm-rt"  # exported into the first pruned folder, then reused
try:
    for name, budget in [(n, float(b)) for n in a.methods.split(",") for b in a.budgets.split(",")]:
        m, spec = method_model(S, name, budget)
        d = os.path.join(work, f"{name}-{budget}")
        save_for_export(m, S["tok"], spec, d)
        t, against = time_vs_dense(d, a.iters, against)
        row = {"method": name, "budget": budget, **t, "heads": spec.kept_heads, "neurons": spec.kept_neurons}
        rows.append(row)
        print(f"{name:10s} {budget:.1f} MACs {row['mac_ratio']:.3f}  speedup {row['speedup']:.2f}x "
              f"(MAC-implied {row['mac_implied']:.2f}x)  parity {row['parity']:.1e}", flush=True)
finally:
    shutil.rmtree(work, ignore_errors=True)
write_json(os.path.join(RESULTS, "speed_methods.json"),
           {"model": "minilm-rt", "backend": "onnxruntime CPU, 2 threads, no spinning", "batch": SPEED_BATCH,
            "seq": SEQ, "iters": a.iters, "rows": rows, "versions": versions()})
plot_speed(rows, os.path.join(RESULTS, "speed_methods.png"))
