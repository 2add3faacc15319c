"""Accuracy vs MAC budget for every importance method on minilm-rt, or on vit-fmnist with
--model vit-fmnist (masks = physical narrowing, proven equal in tests/unit/test_adapters.py), with
scoring and search wall time.

    python bench/accuracy_vs_macs.py [--quick] [--model minilm-rt|vit-fmnist] [--methods optin-est,optin,fisher,magnitude,random]

Writes bench/results/accuracy_vs_macs{_vit-fmnist}{_quick}.json and .png. --quick: 3 budgets,
1,000 test examples."""
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
ap.add_argument("--model", default="minilm-rt", choices=["minilm-rt", "vit-fmnist"])
a = ap.parse_args()
budgets = [float(b) for b in (a.budgets or ("0.4,0.5,0.6" if a.quick else "0.3,0.4,0.5,0.6,0.7,0.8,0.9")).split(",")]
if a.model == "minilm-rt":
    S = setup()
    title, data = "minilm-rt (Rotten Tomatoes), no retraining", "rotten-tomatoes"
else:  # 17 tokens per image, whatever sequence length mask_for names; one torch thread (shared cores)
    import torch

    from optin.prune import PruneConfig, prepare

    torch.set_num_threads(1)
    _, m, _, ad, _, cal, tst, _ = prepare(a.model, "fashion-mnist", PruneConfig(), log=lambda *_: None)
    S = {"model": m, "adapter": ad, "calib": cal, "test": tst}
    title, data = "vit-fmnist (Fashion-MNIST), no retraining", "fashion-mnist"
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
suffix = ("" if a.model == "minilm-rt" else f"_{a.model}") + ("_quick" if a.quick else "")
out_json = os.path.join(RESULTS, f"accuracy_vs_macs{suffix}.json")
if os.path.exists(out_json):  # keep the rows of methods not re-run this time
    rerun = {r["method"] for r in rows}
    rows = [r for r in json.load(open(out_json))["rows"] if r["method"] not in rerun] + rows
res = {"model": a.model, "data": data, "seq_len": adapter.seq_len(64), "test_examples": dense["n"], "dense": dense,
       "calibration": 128,
       "rows": rows, "versions": versions()}
os.makedirs(RESULTS, exist_ok=True)
with open(out_json, "w") as fh:
    json.dump(res, fh, indent=1)
plot_accuracy(rows, dense, os.path.join(RESULTS, f"accuracy_vs_macs{suffix}.png"),
              title)
