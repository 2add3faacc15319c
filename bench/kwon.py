"""Kwon et al. 2022 mask rearrangement and mask tuning (optin/refine.py) on minilm-rt: accuracy vs
MAC budget after the Fisher search alone, + rearrangement, + tuning, and OPTIN scores + tuning.
Accuracy is that of the deployable model: a copy with the scales folded in, physically narrowed
(faster to evaluate than masks; masks with scales = folded+narrowed, tests/unit/test_refine.py,
re-checked here once on two test batches).

    python bench/kwon.py [--quick] [--methods fisher,fisher+rearrange,...] [--budgets 0.4,0.5]

A method is a score name (fisher, optin) followed by steps applied in order: +rearrange (checked
against the calibration loss, layer by layer), +rearrange_unchecked (the Fisher quadratic model
alone) and +tune.
Writes bench/results/kwon.json and .png (kwon_quick.* with --quick: budgets 0.4-0.6, 16 test
batches = 1,024 snippets)."""
import argparse
import copy
import json
import os
import time

import torch
from common import RESULTS, mask_for, masked_accuracy, plot_accuracy, scores_cached, setup

from optin.adapters import adapter_for
from optin.evaluate import accuracy
from optin.importance import ScoreConfig, get_method
from optin.masking import mask_hooks
from optin.narrow import narrow
from optin.refine import calibration_loss, fisher_blocks, fold, rearrange, removal_cost, tune
from optin.report import versions
from optin.spec import PruneSpec

METHODS = "fisher,fisher+rearrange_unchecked,fisher+rearrange,fisher+tune,fisher+rearrange+tune,optin+tune"
STEPS = {"rearrange", "rearrange_unchecked", "tune"}
ap = argparse.ArgumentParser()
ap.add_argument("--quick", action="store_true")
ap.add_argument("--methods", default=METHODS)
ap.add_argument("--budgets", default=None)
a = ap.parse_args()
budgets = [float(b) for b in (a.budgets or ("0.4,0.5,0.6" if a.quick else "0.3,0.4,0.5,0.6,0.7,0.8,0.9")).split(",")]
methods = [m.split("+") for m in a.methods.split(",")]
for m in methods:
    assert m[0] in ("fisher", "optin") and set(m[1:]) <= STEPS, m

S = setup()
torch.set_num_threads(1)  # the machine's cores are shared with other benchmarks
model, adapter, calib = S["model"], S["adapter"], S["calib"]
test = S["test"][:16] if a.quick else S["test"]
dense = masked_accuracy(model, adapter, test, None, None)
print(f"dense  acc {dense['accuracy']:.4f} (n={dense['n']})", flush=True)

scores, scoring_s, cached = {}, {}, {}
for base in dict.fromkeys(m[0] for m in methods):
    t0 = time.time()
    if base == "optin":  # ~280 s of trajectory scoring: computed once, then read from runs/cache
        path = os.path.join(RESULTS, "..", "..", "runs", "cache", "optin-default.pt")
        cached[base] = os.path.exists(path)
        scores[base] = scores_cached(adapter, calib, "optin", ScoreConfig(), "default")
    else:
        cached[base] = False
        scores[base] = get_method(base)(adapter, calib, ScoreConfig())
    scoring_s[base] = time.time() - t0
blocks, blocks_s = None, 0.0
if any(s.startswith("rearrange") for m in methods for s in m[1:]):
    t0 = time.time()
    blocks = fisher_blocks(adapter, calib)
    blocks_s = time.time() - t0
    print(f"fisher blocks {blocks_s:.1f}s  shrinkage heads {blocks.heads_alpha.tolist()} "
          f"neurons {blocks.neurons_alpha.tolist()}", flush=True)


def quad(hm, nm):
    """Raw (unshrunk) r^T I r summed over layers: heads, neurons."""
    return float(removal_cost(hm, blocks.heads).sum()), float(removal_cost(nm, blocks.neurons).sum())


memo = {}  # (base, steps so far, budget) → state, so shared prefixes run once


def run(method, b):
    key = (tuple(method), b)
    if key in memo:
        return memo[key]
    if len(method) == 1:
        t0 = time.time()
        r = mask_for(adapter, scores[method[0]], b)
        st = {"hm": r.head_mask, "nm": r.neuron_mask, "hs": None, "ns": None, "search_s": time.time() - t0,
              "rearrange_s": 0.0, "tune_s": 0.0}
    else:
        st = dict(run(method[:-1], b))
        t0 = time.time()
        if method[-1].startswith("rearrange"):
            verify = calibration_loss(adapter, calib) if method[-1] == "rearrange" else None
            st["hm"], st["nm"] = rearrange(st["hm"], st["nm"], blocks, verify=verify)
            st["rearrange_s"] += time.time() - t0
        else:
            st["hs"], st["ns"] = tune(adapter, calib, st["hm"], st["nm"])
            st["tune_s"] += time.time() - t0
    memo[key] = st
    return st


def narrowed(st):
    """A folded (if tuned) and narrowed copy of the model."""
    m2 = copy.deepcopy(model)
    a2 = adapter_for(m2)
    if st["hs"] is not None:
        fold(a2, st["hs"], st["ns"])
    narrow(a2, PruneSpec.from_masks(m2.config.model_type, st["hm"], st["nm"]))
    return m2


def fold_check(st, m2):
    """Largest logit difference between the masked-with-scales model and its narrowed copy."""
    diff = 0.0
    with torch.no_grad(), mask_hooks(adapter) as state:
        state.set(st["hs"], st["ns"])
        for batch in test[:2]:
            x = {k: v for k, v in batch.items() if k != "labels"}
            diff = max(diff, float((model(**x).logits - m2(**x).logits).abs().max()))
    return diff


def plot(rows):
    plot_accuracy(rows, dense, os.path.join(RESULTS, f"kwon{suffix}.png"),
                  "minilm-rt: Kwon et al. rearrangement and mask tuning, no retraining")


def save(rows):
    """Written after every row, so an interrupted run keeps what it measured."""
    res = {"model": "minilm-rt", "seq_len": 64, "test_examples": dense["n"], "dense": dense, "calibration": 128,
           "evaluated": "folded and narrowed copy", "blocks_s": blocks_s, "rows": rows, "versions": versions()}
    if blocks is not None:
        res["shrinkage"] = {"heads": blocks.heads_alpha.tolist(), "neurons": blocks.neurons_alpha.tolist()}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"kwon{suffix}.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    plot(rows)


suffix = "_quick" if a.quick else ""
rows = []
for method in methods:
    name = "+".join(method)
    for b in budgets:
        st = run(method, b)
        m2 = narrowed(st)
        acc = accuracy(m2, test)
        refine_s = st["rearrange_s"] + st["tune_s"]
        row = {"method": name, "budget": b, "accuracy": acc["accuracy"], "ci95": acc["ci95"],
               "drop": dense["accuracy"] - acc["accuracy"], "scoring_s": scoring_s[method[0]],
               "scores_from_cache": cached[method[0]], "search_s": st["search_s"], "refine_s": refine_s,
               "rearrange_s": st["rearrange_s"], "tune_s": st["tune_s"],
               "blocks_s": blocks_s if any(s.startswith("rearrange") for s in method) else 0.0,
               "heads": st["hm"].sum(1).int().tolist(), "neurons": st["nm"].sum(1).int().tolist()}
        if blocks is not None:
            row["fisher_quad"] = quad(st["hm"], st["nm"])
        if st["hs"] is not None:
            kept = torch.cat([st["hs"][st["hm"] > 0], st["ns"][st["nm"] > 0]])
            row["scales"] = {"min": float(kept.min()), "max": float(kept.max()), "mean": float(kept.mean())}
            if not any("fold_max_abs_diff" in r for r in rows):
                row["fold_max_abs_diff"] = fold_check(st, m2)
        rows.append(row)
        save(rows)
        print(f"{name:24s} {b:.1f}  acc {acc['accuracy']:.4f} ±{acc['ci95']:.4f}  scoring {scoring_s[method[0]]:6.1f}s "
              f"search {st['search_s']:.2f}s rearrange {st['rearrange_s']:.1f}s tune {st['tune_s']:.1f}s", flush=True)
