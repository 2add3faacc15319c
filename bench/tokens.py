"""Token reduction on and off, side by side, on vit-fmnist (Fashion-MNIST, 10,000 test images).

For each MAC budget and each token share (the part of the MAC reduction taken by dropping tokens;
0 = heads and neurons only), the same head/neuron scores and token scores (computed once, on the
128 calibration images) go through optin.prune's planning and search, the model is narrowed on a
copy, evaluated on the test split, saved, exported to ONNX with parity, and timed against dense
with ONNX Runtime CPU, interleaved (batch 32 × 17 tokens, 2 threads).

    python bench/tokens.py [--budgets 0.4,0.5,0.6] [--shares 0,0.25,0.5,1] [--method optin-est] [--quick]

Writes bench/results/tokens{_quick}.{json,png}."""
import argparse
import copy
import os
import shutil
import tempfile
import time

import torch
from common import RESULTS, time_vs_dense

from optin.adapters import adapter_for
from optin.evaluate import accuracy
from optin.importance import ScoreConfig, get_method
from optin.io import save_pruned, write_json
from optin.narrow import narrow
from optin.plots import _plt
from optin.prune import PruneConfig, cost_model_for, dense_model_macs, prepare, token_plan
from optin.report import versions
from optin.search import search
from optin.spec import PruneSpec
from optin.tokens import token_scores

ap = argparse.ArgumentParser()
ap.add_argument("--budgets", default="0.4,0.5,0.6")
ap.add_argument("--shares", default="0,0.25,0.5,1")
ap.add_argument("--method", default="optin-est")
ap.add_argument("--iters", type=int, default=200)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--quick", action="store_true", help="budget 0.6, shares 0 and 0.5, 1,000 test images")
a = ap.parse_args()
if a.quick:
    a.budgets, a.shares, a.iters = "0.6", "0,0.5", 50
torch.set_num_threads(1)  # scoring on one thread: two measured 3-15x slower on the shared 2 cores
quiet = lambda *_: None  # noqa: E731
cfg = PruneConfig(method=a.method, eval_limit=1000 if a.quick else None)
path, model, proc, ad, seq, calib, test, _ = prepare("vit-fmnist", "fashion-mnist", cfg, log=quiet)
d = ad.dims()
dense_macs = dense_model_macs(ad, seq)
dense = accuracy(model, test)
t0 = time.time()
scores = get_method(a.method)(ad, calib, ScoreConfig())
t_units = time.time() - t0
t0 = time.time()
tscores, _ = token_scores(ad, calib, ScoreConfig())
t_tokens = time.time() - t0
print(f"dense {dense['accuracy']:.4f}; scoring {t_units:.0f} s (heads/neurons), {t_tokens:.0f} s (tokens)", flush=True)

rows, dense_dir = [], "vit-fmnist"
work = tempfile.mkdtemp(prefix="bench_tokens.")
try:
    for budget in map(float, a.budgets.split(",")):
        for share in map(float, a.shares.split(",")):
            kept, info = token_plan(ad, tscores, seq, dense_macs, budget, share) if share else (None, None)
            costs = cost_model_for(ad, seq, None if kept is None else [len(k) for k in kept])
            res = search(scores.heads, scores.neurons, costs, budget * dense_macs)
            spec = PruneSpec.from_masks("vit", res.head_mask, res.neuron_mask, kept, dims=d)
            m = copy.deepcopy(model)
            narrow(adapter_for(m), spec)
            acc = accuracy(m, test)
            out = os.path.join(work, f"{budget}-{share}")
            save_pruned(m, proc, spec, out, extra={"seq_len": seq, "max_length": seq, "source": path,
                                                   "data": "fashion-mnist"})
            speed, dense_dir = time_vs_dense(out, a.iters, against=dense_dir, batch=a.batch, seq=seq)
            row = {"budget": budget, "share": share, "accuracy": acc["accuracy"], "ci95": acc["ci95"],
                   "drop": dense["accuracy"] - acc["accuracy"], "mac_ratio": res.cost / dense_macs,
                   "tokens": spec.kept_tokens(seq), "heads": spec.kept_heads, "neurons": spec.kept_neurons,
                   **speed}
            rows.append(row)
            print(f"budget {budget:.1f} share {share:.2f}: acc {acc['accuracy']:.4f} (drop {row['drop']:+.4f}) "
                  f"MACs {row['mac_ratio']:.3f} speedup {row['speedup']:.2f}x (implied {row['mac_implied']:.2f}x) "
                  f"parity {row['parity']:.1e} tokens {row['tokens']} heads {row['heads']}", flush=True)
finally:
    shutil.rmtree(work, ignore_errors=True)

suffix = "_quick" if a.quick else ""
write_json(os.path.join(RESULTS, f"tokens{suffix}.json"),
           {"model": "vit-fmnist", "data": "fashion-mnist test", "method": a.method, "dense": dense,
            "scoring_s": {"units": t_units, "tokens": t_tokens},
            "speed": f"onnxruntime CPU, 2 threads, batch {a.batch} x {seq} tokens, interleaved, {a.iters} iters",
            "rows": rows, "versions": versions()})
plt = _plt()
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
for share in dict.fromkeys(r["share"] for r in rows):
    pts = [r for r in rows if r["share"] == share]
    label = "heads+neurons only" if share == 0 else f"tokens take {share:.0%} of the reduction"
    ax1.errorbar([p["mac_ratio"] for p in pts], [100 * p["accuracy"] for p in pts],
                 yerr=[100 * p["ci95"] for p in pts], marker="o", capsize=3, label=label)
    ax2.plot([p["mac_ratio"] for p in pts], [p["speedup"] for p in pts], marker="o", label=label)
ax1.axhline(100 * dense["accuracy"], color="gray", ls=":", label="dense")
ax1.set_xlabel("MACs kept (fraction of dense)")
ax1.set_ylabel("test accuracy (%)")
xs = sorted({r["mac_ratio"] for r in rows})
ax2.plot(xs, [1 / x for x in xs], color="gray", ls="--", label="MAC-implied")
ax2.set_xlabel("MACs kept (fraction of dense)")
ax2.set_ylabel(f"ORT CPU speedup (b{a.batch} × {seq} tokens)")
ax1.legend(fontsize=7)
ax2.legend(fontsize=7)
fig.suptitle(f"vit-fmnist, {a.method}, no retraining: token reduction on and off", fontsize=10)
fig.tight_layout()
fig.savefig(os.path.join(RESULTS, f"tokens{suffix}.png"), dpi=120)
