"""Ablations users ask about: calibration size (32 / 128 / 512 snippets) for the default scorer
(`optin-est`) and for exact scoring, and the neuron group size of exact scoring (32 / 64).
Test accuracy at 0.6 of dense MACs, with scoring time. (Calibration 128 / group 32 are the rows of
accuracy_vs_macs.json; group 16 doubles exact scoring time and was left out on 2 cores.)

    python bench/ablate_calib_group.py [--quick]

Writes bench/results/ablate_calib_group.json and .png."""
import argparse
import json
import os
import time

from common import RESULTS, SEQ, mask_for, masked_accuracy, setup

from optin.data import make_batches, rotten_tomatoes
from optin.importance import ScoreConfig, get_method
from optin.plots import _plt
from optin.report import versions

ap = argparse.ArgumentParser()
ap.add_argument("--quick", action="store_true")
a = ap.parse_args()
budgets = [0.6]
S = setup(calib=512)
model, ad, tok = S["model"], S["adapter"], S["tok"]
test = S["test"][:16] if a.quick else S["test"]
calib_texts = rotten_tomatoes().split("calib")
calib = {n: make_batches(tok, calib_texts[:n], 32, SEQ) for n in (32, 128, 512)}
runs = [("optin-est", 32, 32), ("optin-est", 512, 32), ("optin", 32, 32), ("optin", 128, 64)]
if a.quick:
    runs = [("optin-est", 32, 32), ("optin", 32, 64)]
dense = masked_accuracy(model, ad, test, None, None)
rows = []
for method, n, g in runs:
    t0 = time.time()
    scores = get_method(method)(ad, calib[n], ScoreConfig(group_size=g))
    secs = time.time() - t0
    for b in budgets:
        r = mask_for(ad, scores, b)
        acc = masked_accuracy(model, ad, test, r.head_mask, r.neuron_mask)
        rows.append({"method": method, "calibration": n, "group_size": g if method == "optin" else 1, "budget": b,
                     "accuracy": acc["accuracy"], "ci95": acc["ci95"], "scoring_s": secs})
        print(f"{method} calib {n} group {g}: {b} → {acc['accuracy']:.4f} ({secs:.0f} s scoring)", flush=True)
suffix = "_quick" if a.quick else ""
res = {"model": "minilm-rt", "dense": dense, "rows": rows, "versions": versions(),
       "note": "the rows calibration 128 / group 32 are in accuracy_vs_macs.json and estimator.json"}
with open(os.path.join(RESULTS, f"ablate_calib_group{suffix}.json"), "w") as fh:
    json.dump(res, fh, indent=1)
plt = _plt()
fig, ax = plt.subplots(figsize=(7, 3.8))
labels = list(dict.fromkeys(f"{r['method']} c{r['calibration']} g{r['group_size']}" for r in rows))
for j, b in enumerate(budgets):
    vals = [100 * r["accuracy"] for r in rows if r["budget"] == b]
    errs = [100 * r["ci95"] for r in rows if r["budget"] == b]
    ax.barh([i + 0.4 * j for i in range(len(labels))], vals, height=0.4, xerr=errs, label=f"{b:.1f} MACs")
ax.set_yticks([i + 0.2 for i in range(len(labels))], labels, fontsize=8)
ax.axvline(100 * dense["accuracy"], color="gray", ls="--", label="dense")
ax.set_xlim(70, 85)
ax.set_xlabel(f"test accuracy % (n={dense['n']}, 95% CI)")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(os.path.join(RESULTS, f"ablate_calib_group{suffix}.png"), dpi=120)
