"""Ablations users ask about: calibration size (32 / 128 / 512 snippets) for the default scorer
(`optin-est`) and for exact scoring, and the neuron group size of exact scoring (16 / 32 / 64).
Test accuracy at 0.6 of dense MACs, with scoring time. (Calibration 128 / group 32 are the rows of
accuracy_vs_macs.json.)

    python bench/ablate_calib_group.py [--quick] [--runs optin:32:16,...] [--threads N]

--runs METHOD:CALIBRATION:GROUP[,...] runs only those rows and merges them into the existing
ablate_calib_group.json (a row with the same method, calibration, group and budget is replaced,
every other row is kept as measured); without it every row is run and the file is rewritten.
--threads sets torch's intra-op threads for scoring and evaluation (default 2, what the first
rows used); each row records the count it ran with.

Writes bench/results/ablate_calib_group.json and .png."""
import argparse
import json
import os
import time

import torch
from common import RESULTS, SEQ, mask_for, masked_accuracy, setup

from optin.data import make_batches, rotten_tomatoes
from optin.importance import ScoreConfig, get_method
from optin.plots import _plt
from optin.report import versions

# (method, calibration snippets, neuron group of exact scoring; optin-est scores every neuron)
RUNS = [("optin-est", 32, 32), ("optin-est", 512, 32), ("optin", 32, 32), ("optin", 32, 16), ("optin", 128, 64)]


def parse_runs(text):
    out = []
    for item in text.split(","):
        method, n, g = item.split(":")
        assert method in ("optin", "optin-est") and int(n) in (32, 128, 512), item
        out.append((method, int(n), int(g)))
    return out


def key(r):
    return (r["method"], r["calibration"], r["group_size"], r["budget"])


ap = argparse.ArgumentParser()
ap.add_argument("--quick", action="store_true")
ap.add_argument("--runs", default=None, help="METHOD:CALIB:GROUP,... run only these and merge into the JSON")
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
budgets = [0.6]
S = setup(calib=512)
torch.set_num_threads(a.threads)
model, ad, tok = S["model"], S["adapter"], S["tok"]
test = S["test"][:16] if a.quick else S["test"]
calib_texts = rotten_tomatoes().split("calib")
calib = {n: make_batches(tok, calib_texts[:n], 32, SEQ) for n in (32, 128, 512)}
runs = parse_runs(a.runs) if a.runs else RUNS
if a.quick:
    runs = parse_runs(a.runs) if a.runs else [("optin-est", 32, 32), ("optin", 32, 64)]
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
                     "accuracy": acc["accuracy"], "ci95": acc["ci95"], "scoring_s": secs, "threads": a.threads,
                     "heads": r.head_mask.sum(1).int().tolist(), "neurons": r.neuron_mask.sum(1).int().tolist()})
        print(f"{method} calib {n} group {g}: {b} → {acc['accuracy']:.4f} ({secs:.0f} s scoring, "
              f"{a.threads} threads)", flush=True)
suffix = "_quick" if a.quick else ""
path = os.path.join(RESULTS, f"ablate_calib_group{suffix}.json")
if a.runs and os.path.exists(path):  # merge: keep every earlier row this run did not redo
    with open(path) as fh:
        old = json.load(fh)
    assert old["dense"]["n"] == dense["n"] and old["dense"]["accuracy"] == dense["accuracy"], \
        "the existing rows were measured on another test set or model"
    new = {key(r) for r in rows}
    rows = [r for r in old["rows"] if key(r) not in new] + rows
order = {k[:3]: i for i, k in enumerate((m, n, g if m == "optin" else 1) for m, n, g in RUNS)}
rows.sort(key=lambda r: (order.get(key(r)[:3], len(order)), r["budget"]))
res = {"model": "minilm-rt", "dense": dense, "rows": rows, "versions": versions(),
       "note": "the rows calibration 128 / group 32 are in accuracy_vs_macs.json and estimator.json; "
               "rows without a 'threads' field ran with 2 torch threads"}
with open(path, "w") as fh:
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
