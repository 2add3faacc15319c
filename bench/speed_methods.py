"""Measured ONNX Runtime CPU speedup over dense for every importance method's mask at the same
MAC budget (0.3 to 0.9): each mask is narrowed, saved, exported with parity, and timed against
the dense model interleaved (batch 8 × 64 real tokens, 2 threads, no spinning), one method after
another in this one process.

    python bench/speed_methods.py [--budgets 0.3,...,0.9] [--iters 200]

Writes bench/results/speed_methods.{json,png}."""
import argparse
import copy
import os
import shutil
import tempfile

from common import RESULTS, SEQ, mask_for, scores_cached, setup

from export.engines import EngineConfig
from export.onnx import export_onnx
from export.samples import fixed_inputs
from optin.adapters import adapter_for
from optin.importance import ScoreConfig
from optin.io import save_pruned, write_json
from optin.narrow import narrow
from optin.plots import _plt
from optin.report import versions
from optin.spec import PruneSpec
from optin.zoo import resolve_model
from profiling.latency import ProfileConfig, compare, model_macs, open_pair

ap = argparse.ArgumentParser()
ap.add_argument("--budgets", default="0.3,0.4,0.5,0.6,0.7,0.8,0.9")
ap.add_argument("--iters", type=int, default=200)
ap.add_argument("--methods", default="optin-est,optin,fisher,magnitude,random")
a = ap.parse_args()
S = setup(test=False)
model, tok, ad = S["model"], S["tok"], S["adapter"]
tags = {"optin": "g32-c128", "fisher": "c128"}
rows = []
work = tempfile.mkdtemp(prefix="speed_methods.")
try:
    for name, budget in [(n, float(b)) for n in a.methods.split(",") for b in a.budgets.split(",")]:
        scores = scores_cached(ad, S["calib"], name, ScoreConfig(), tags.get(name, "c128"))
        r = mask_for(ad, scores, budget)
        spec = PruneSpec.from_masks(model.config.model_type, r.head_mask, r.neuron_mask)
        m = copy.deepcopy(model)
        narrow(adapter_for(m), spec)
        d = os.path.join(work, f"{name}-{budget}")
        save_pruned(m, tok, spec, d, extra={"seq_len": SEQ, "max_length": SEQ, "source": resolve_model("minilm-rt"),
                                            "data": "rotten-tomatoes"})
        exp = export_onnx(d, log=lambda *_: None)
        pair = open_pair(d, ProfileConfig(batch=8, seq=SEQ, iters=a.iters, against="minilm-rt",
                                          engine=EngineConfig(threads=2)), log=lambda *_: None)
        inputs, _ = fixed_inputs(pair.loaded, 8, SEQ)
        c = compare(pair.dense, pair.target, inputs, iters=a.iters, warmup=20)
        dense_macs, _ = model_macs(pair.dense_dir, SEQ)
        pruned_macs, _ = model_macs(d, SEQ)
        row = {"method": name, "budget": budget, "mac_ratio": pruned_macs / dense_macs,
               "mac_implied": dense_macs / pruned_macs, "speedup": c["speedup"],
               "dense_ms": c["a"]["latency_ms"]["median"], "pruned_ms": c["b"]["latency_ms"]["median"],
               "cv": [c["a"]["cv"], c["b"]["cv"]], "parity": exp["parity"]["max_abs_diff"],
               "heads": spec.kept_heads, "neurons": spec.kept_neurons}
        rows.append(row)
        print(f"{name:10s} {budget:.1f} MACs {row['mac_ratio']:.3f}  speedup {row['speedup']:.2f}x "
              f"(MAC-implied {row['mac_implied']:.2f}x)  parity {row['parity']:.1e}", flush=True)
finally:
    shutil.rmtree(work, ignore_errors=True)
write_json(os.path.join(RESULTS, "speed_methods.json"),
           {"model": "minilm-rt", "backend": "onnxruntime CPU, 2 threads, no spinning", "batch": 8, "seq": SEQ,
            "iters": a.iters, "rows": rows, "versions": versions()})
plt = _plt()
fig, ax = plt.subplots(figsize=(6.5, 4))
for name in dict.fromkeys(r["method"] for r in rows):
    pts = [r for r in rows if r["method"] == name]
    ax.plot([p["mac_ratio"] for p in pts], [p["speedup"] for p in pts], marker="o", label=name)
xs = sorted({r["mac_ratio"] for r in rows})
ax.plot(xs, [1 / x for x in xs], color="gray", ls="--", label="MAC-implied (1 / ratio)")
ax.set_xlabel("MACs kept (fraction of dense)")
ax.set_ylabel(f"speedup over dense (ORT CPU, b8 × s{SEQ}, interleaved)")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(os.path.join(RESULTS, "speed_methods.png"), dpi=120)
