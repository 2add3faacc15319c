"""Accuracy vs MAC budget for every importance method on minilm-rt (masks = physical narrowing,
proven equal in tests/unit/test_adapters.py), with scoring and search wall time.

    python bench/accuracy_vs_macs.py [--quick] [--methods optin-est,optin,fisher,magnitude,random]

Writes bench/results/accuracy_vs_macs.json and .png. --quick: 3 budgets, 1,000 test snippets."""
import argparse
import json
import os
import time

from common import RESULTS, mask_for, masked_accuracy, plot_accuracy, setup

from optin.importance import METHODS, ScoreConfig, get_method
from optin.report import versions

ap = argparse.ArgumentParser()
ap.add_argument("--quick", action="store_true")
ap.add_argument("--methods", default="optin-est,optin,fisher,magnitude,random")
ap.add_argument("--budgets", default=None)
a = ap.parse_args()
budgets = [float(b) for b in (a.budgets or ("0.4,0.5,0.6" if a.quick else "0.3,0.4,0.5,0.6,0.7,0.8,0.9")).split(",")]
S = setup()
model, adapter = S["model"], S["adapter"]
test = S["test"][:16] if a.quick else S["test"]
dense = masked_accuracy(model, adapter, test, None, None)
rows = []
for name in a.methods.split(","):
    assert name in METHODS, name
    t0 = time.time()
    scores = get_method(name)(adapter, S["calib"], ScoreConfig())
    t_score = time.time() - t0
    for b in budgets:
        t1 = time.time()
        r = mask_for(adapter, scores, b)
        t_search = time.time() - t1
        acc = masked_accuracy(model, adapter, test, r.head_mask, r.neuron_mask)
        rows.append({"method": name, "budget": b, "accuracy": acc["accuracy"], "ci95": acc["ci95"],
                     "drop": dense["accuracy"] - acc["accuracy"], "scoring_s": t_score, "search_s": t_search,
                     "heads": r.head_mask.sum(1).int().tolist(), "neurons": r.neuron_mask.sum(1).int().tolist()})
        print(f"{name:10s} {b:.1f}  acc {acc['accuracy']:.4f} ±{acc['ci95']:.4f}  "
              f"scoring {t_score:6.1f}s search {t_search:.2f}s", flush=True)
suffix = "_quick" if a.quick else ""
out_json = os.path.join(RESULTS, f"accuracy_vs_macs{suffix}.json")
if os.path.exists(out_json):  # keep the rows of methods not re-run this time
    rerun = {r["method"] for r in rows}
    rows = [r for r in json.load(open(out_json))["rows"] if r["method"] not in rerun] + rows
res = {"model": "minilm-rt", "seq_len": 64, "test_examples": dense["n"], "dense": dense, "calibration": 128,
       "rows": rows, "versions": versions()}
os.makedirs(RESULTS, exist_ok=True)
with open(out_json, "w") as fh:
    json.dump(res, fh, indent=1)
plot_accuracy(rows, dense, os.path.join(RESULTS, f"accuracy_vs_macs{suffix}.png"),
              "minilm-rt (Rotten Tomatoes), no retraining")
