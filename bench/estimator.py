"""Fast trajectory estimate (`--method optin-est`) against exact OPTIN scoring on minilm-rt:
scoring time, rank correlation of the scores, and accuracy at 0.5 / 0.6 / 0.7 of dense MACs on
the dev sample (2,000 seeded train snippets, for choosing) and the test split.

    python bench/estimator.py [--quick] [--probes 8,32]

Writes bench/results/estimator.json and .png."""
import argparse
import json
import os
import time

import torch
from common import RESULTS, mask_for, masked_accuracy, scores_cached, setup, spearman

from optin.importance import ScoreConfig
from optin.importance.estimate import trajectory_estimate
from optin.plots import _plt
from optin.report import versions


def per_candidate(exact, est):
    """Estimated scores summed over each exact candidate (a head, or a group of neurons)."""
    raw = exact.meta["raw"]
    out = []
    for i, kind, units in zip(raw["layer"].tolist(), raw["kind"], raw["units"]):
        out.append(float(est.heads[i, units[0]]) if kind == "head" else float(est.neurons[i, units].sum()))
    return torch.tensor(out)


ap = argparse.ArgumentParser()
ap.add_argument("--quick", action="store_true")
ap.add_argument("--probes", default="8,32", help="probe counts to time and correlate")
ap.add_argument("--accuracy-probes", type=int, default=8, help="the probe count whose accuracy is measured")
a = ap.parse_args()
budgets = [0.5, 0.6, 0.7]
S = setup(dev=2000, test=not a.quick)
adapter = S["adapter"]
evals = {"dev": S["dev"][:4] if a.quick else S["dev"]}
if not a.quick:
    evals["test"] = S["test"]
cfg = ScoreConfig()
exact = scores_cached(adapter, S["calib"], "optin", cfg, "g32-c128")
exact_cand = torch.cat([exact.heads.flatten(), torch.tensor(
    [float(exact.neurons[i, u].sum()) for i, k, u in zip(exact.meta["raw"]["layer"].tolist(),
                                                         exact.meta["raw"]["kind"], exact.meta["raw"]["units"])
     if k == "neurons"])])
dense = {k: masked_accuracy(S["model"], adapter, v, None, None) for k, v in evals.items()}
rows = []


def evaluate(name, scores, seconds, extra, known=None):
    """known: {(split, budget): accuracy row} already measured for these exact scores."""
    for b in budgets:
        r = mask_for(adapter, scores, b)
        row = {"method": name, "budget": b, "scoring_s": seconds, **extra}
        for k, v in evals.items():
            acc = (known or {}).get((k, b)) or masked_accuracy(S["model"], adapter, v, r.head_mask, r.neuron_mask)
            row[k] = acc["accuracy"]
            row[f"{k}_ci95"] = acc["ci95"]
        rows.append(row)
        print(name, b, {k: round(row[k], 4) for k in evals}, flush=True)


# the exact scores are bench/accuracy_vs_macs.py's; its test accuracies are reused (same masks)
prev = json.load(open(os.path.join(RESULTS, "accuracy_vs_macs.json")))
known = {("test", r["budget"]): r for r in prev["rows"] if r["method"] == "optin" and not a.quick}
t_exact = next((r["scoring_s"] for r in prev["rows"] if r["method"] == "optin"), None)
evaluate("optin (exact, groups of 32)", exact, t_exact, {}, known)
for k in [int(p) for p in a.probes.split(",")]:
    t0 = time.time()
    est = trajectory_estimate(adapter, S["calib"], cfg, probes=k)
    secs = time.time() - t0
    cand = per_candidate(exact, est)
    nh = exact.heads.numel()
    corr = {"all": spearman(cand, exact_cand), "heads": spearman(cand[:nh], exact_cand[:nh]),
            "neuron_groups": spearman(cand[nh:], exact_cand[nh:])}
    print(f"optin-est probes={k}: {secs:.1f} s, spearman {corr}", flush=True)
    row = {"method": f"optin-est ({k} probes)", "probes": k, "scoring_s": secs, "spearman": corr}
    if k == a.accuracy_probes:
        evaluate(row.pop("method"), est, secs, row)
    else:
        rows.append(row)

res = {"model": "minilm-rt", "calibration": 128, "dense": dense, "rows": rows, "versions": versions(),
       "machine": f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}"}
suffix = "_quick" if a.quick else ""
with open(os.path.join(RESULTS, f"estimator{suffix}.json"), "w") as fh:
    json.dump(res, fh, indent=1)
plt = _plt()
fig, axes = plt.subplots(1, len(evals), figsize=(5.5 * len(evals), 3.8), squeeze=False)
for ax, split in zip(axes[0], evals):
    for name in dict.fromkeys(r["method"] for r in rows):
        pts = [r for r in rows if r["method"] == name and "budget" in r]
        if not pts:
            continue
        ax.errorbar([p["budget"] for p in pts], [100 * p[split] for p in pts],
                    yerr=[100 * p[f"{split}_ci95"] for p in pts], marker="o", capsize=3, label=name)
    ax.axhline(100 * dense[split]["accuracy"], color="gray", ls="--", label="dense")
    ax.set_xlabel("MACs kept (fraction of dense)")
    ax.set_ylabel(f"{split} accuracy % (n={dense[split]['n']})")
    ax.legend(fontsize=7)
fig.suptitle("exact trajectory scoring vs the Gauss-Newton/Hutchinson estimate (minilm-rt)", fontsize=10)
fig.tight_layout()
fig.savefig(os.path.join(RESULTS, f"estimator{suffix}.png"), dpi=120)
