"""`optin-fast` (one backward pass per probe for every target layer, per-example masks, exact KD)
against today's `optin-est` (a pass per probe and target layer), Fisher one example at a time
(`fisher`) and Kwon et al.'s batched Fisher (`fisher-batch`): scoring time in one process,
interleaved (two rounds, medians); Spearman rank correlation with optin-est over every head and
neuron, beside optin-est against itself with another probe seed (its own noise ceiling); and on
minilm-rt masks-only accuracy at 0.4-0.7 of dense MACs on the dev sample (2,000 seeded train
snippets, where settings are chosen) and on the 5,000 test snippets.

    python bench/fast_estimator.py [--part minilm|base|mpnet|all] [--quick]

`mpnet`: the trained base-size mpnet-rt (zoo; needs the all-mpnet-base-v2 wheels, bench/README.md
"MPNet") on its 128 calibration snippets: optin-fast against Fisher interleaved, and the rank
correlation with the optin-est scores bench/recon.py cached for it (runs/cache).

`base`: a randomly initialised BertForSequenceClassification of bert-base-uncased's shape on the
same 128 calibration snippets (minilm-rt's tokenizer: bert-base-uncased's vocabulary); timing and
rank correlation only. Writes bench/results/fast_estimator.json and .png."""
import argparse
import json
import os
import time

import torch
from common import RESULTS, correlations, mask_for, masked_accuracy, scores_cached, setup

from optin.adapters import adapter_for
from optin.importance import ScoreConfig, get_method
from optin.plots import _plt
from optin.report import versions

BUDGETS = (0.4, 0.5, 0.6, 0.7)
README_EST = {0.4: 0.7832, 0.5: 0.7956, 0.6: 0.8178, 0.7: 0.8214}  # bench/README.md, optin-est, test
README_FISHER = {0.4: 0.7618, 0.5: 0.7962, 0.6: 0.8190, 0.7: 0.8204}


FAST_PROBES = {}  # the one-pass scorers' probes when --fast-probes is given (else fast.PROBES)


def score(ad, batches, m, cfg=ScoreConfig()):
    return get_method(m)(ad, batches, cfg, **(FAST_PROBES if m in ("optin-fast", "optin-fast-depth") else {}))


def timed_round(ad, batches, methods, rounds: int, once=()):
    """Each method's scoring seconds, methods interleaved round by round; `once`: only in round 0."""
    secs, scores = {m: [] for m in methods}, {}
    for r in range(rounds):
        for m in methods:
            if r and m in once:
                continue
            t = time.time()
            s = score(ad, batches, m)
            secs[m].append(time.time() - t)
            scores.setdefault(m, s)
            print(f"round {r}: {m} {secs[m][-1]:.1f} s", flush=True)
    med = {m: sorted(v)[len(v) // 2] if len(v) % 2 else sum(sorted(v)[len(v) // 2 - 1:len(v) // 2 + 1]) / 2
           for m, v in secs.items()}
    return secs, med, scores


def part_result(ad, batches, rounds, ceiling=True, timing_only=False):
    if timing_only:  # optin-fast against Fisher only (optin-est on BERT-base takes half an hour)
        secs, med, _ = timed_round(ad, batches, ["fisher", "optin-fast"], rounds)
        return {"seconds": secs, "median_s": med, "fast_over_fisher": med["optin-fast"] / med["fisher"]}, None
    methods = ["fisher", "optin-fast", "fisher-batch", "optin-est"]
    secs, med, scores = timed_round(ad, batches, methods, rounds, once=("optin-est",))
    # optin-est with another probe seed: how well today's estimate agrees with itself
    seed1 = get_method("optin-est")(ad, batches, ScoreConfig(seed=1)) if ceiling else None
    fast1 = score(ad, batches, "optin-fast", ScoreConfig(seed=1))
    res = {"seconds": secs, "median_s": med, "fast_over_fisher": med["optin-fast"] / med["fisher"],
           "est_over_fisher": med["optin-est"] / med["fisher"],
           "spearman": {"optin-fast vs optin-est": correlations(scores["optin-fast"], scores["optin-est"]),
                        **({"optin-est vs optin-est (probe seed 1)": correlations(seed1, scores["optin-est"])}
                           if ceiling else {}),
                        "optin-fast vs optin-fast (seed 1)": correlations(fast1, scores["optin-fast"]),
                        "fisher-batch vs fisher": correlations(scores["fisher-batch"], scores["fisher"])},
           "md_ratio_fast_over_est": (scores["optin-fast"].meta["raw"]["md"].sum(0)
                                      / scores["optin-est"].meta["raw"]["md"].sum(0)).tolist()}
    print(json.dumps({k: v for k, v in res.items() if k != "seconds"}, indent=1), flush=True)
    return res, scores


ap = argparse.ArgumentParser()
ap.add_argument("--part", default="all", choices=["minilm", "base", "mpnet", "all"])
ap.add_argument("--quick", action="store_true", help="32 calibration snippets, 2 dev batches, no test split")
ap.add_argument("--threads", type=int, default=2, help="torch threads")
ap.add_argument("--base-ceiling", action="store_true",
                help="BERT-base, mpnet-rt: also optin-est with a second seed (long)")
ap.add_argument("--fast-probes", type=int, default=None, help="the one-pass scorer's probes (results under minilm_pN / bert_base_pN / mpnet_rt_pN)")
ap.add_argument("--timing-only", action="store_true", help="BERT-base: time optin-fast against Fisher only")
ap.add_argument("--no-ceiling", action="store_true", help="minilm-rt: skip optin-est with a second seed")
ap.add_argument("--fast-method", default="optin-fast", choices=["optin-fast", "optin-fast-depth"],
                help="mpnet-rt: the one-pass scorer timed and correlated (results under mpnet_rt_<method> "
                     "when not optin-fast)")
ap.add_argument("--tag", default="", help="appended to the results' keys (a rerun beside the old one)")
a = ap.parse_args()
if a.fast_probes:
    FAST_PROBES["probes"] = a.fast_probes
tag = (f"_p{a.fast_probes}" if a.fast_probes else "") + (f"_{a.tag}" if a.tag else "")
out = os.path.join(RESULTS, "fast_estimator" + ("_quick" if a.quick else "") + ".json")
res = {"versions": versions()}
# minilm-rt's model and snippets (the base part reuses the snippets; the mpnet part needs neither)
S = setup(calib=32 if a.quick else 128, dev=2000 if a.part in ("minilm", "all") else 0,
          test=not a.quick and a.part in ("minilm", "all")) if a.part != "mpnet" else None
torch.set_num_threads(a.threads)
if a.part in ("minilm", "all"):
    ad = S["adapter"]
    row, scores = part_result(ad, S["calib"], 1 if a.quick else 2, ceiling=not a.no_ceiling)
    evals = {"dev": S["dev"][:2] if a.quick else S["dev"], **({} if a.quick else {"test": S["test"]})}
    row["dense"] = {k: masked_accuracy(S["model"], ad, v, None, None) for k, v in evals.items()}
    row["accuracy"] = []
    for m in ("optin-fast",) if a.fast_probes else ("optin-fast", "optin-est", "fisher-batch", "fisher"):
        for b in BUDGETS:
            r = mask_for(ad, scores[m], b)
            acc = {k: masked_accuracy(S["model"], ad, v, r.head_mask, r.neuron_mask) for k, v in evals.items()}
            row["accuracy"].append({"method": m, "budget": b, **{k: v["accuracy"] for k, v in acc.items()},
                                    **{f"{k}_ci95": v["ci95"] for k, v in acc.items()},
                                    "kept_heads": r.head_mask.sum(1).tolist(), "kept_neurons": r.neuron_mask.sum(1).tolist()})
            print(m, b, {k: round(v["accuracy"], 4) for k, v in acc.items()}, flush=True)
    res["minilm" + tag] = {"model": "minilm-rt", "fast_probes": a.fast_probes or "default", "threads": a.threads, "calibration": sum(len(b["labels"]) for b in S["calib"]), **row}
if a.part in ("base", "all"):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_labels=2)).eval()  # 12 × 768, 12 heads, FFN 3072
    row, _ = part_result(adapter_for(model), S["calib"], 1 if a.quick else 2, ceiling=a.base_ceiling,
                         timing_only=a.timing_only)
    res["bert_base" + tag + ("_timing" if a.timing_only else "")] = {"model": "bert-base-uncased shape (random init)", "threads": a.threads, "calibration":
                        sum(len(b["labels"]) for b in S["calib"]), "seq": "≤ 64 (real snippets, padded per batch)",
                        "params_M": sum(p.numel() for p in model.parameters()) / 1e6, **row}
if a.part == "mpnet":  # not in "all": it needs the mpnet wheels
    from optin.prune import PruneConfig, prepare

    prep = prepare("mpnet-rt", "rotten-tomatoes", PruneConfig(), log=lambda *_: None)
    fm = a.fast_method
    key = "mpnet_rt" + tag + ("" if fm == "optin-fast" else "_" + fm)
    secs, med, sc = timed_round(prep.adapter, prep.calib, ["fisher", fm], 1 if a.quick else 2)
    est = scores_cached(prep.adapter, prep.calib, "optin-est", ScoreConfig(), "mpnet-rt-c128")  # as recon.py scored it
    fast1 = score(prep.adapter, prep.calib, fm, ScoreConfig(seed=1))
    est1 = get_method("optin-est")(prep.adapter, prep.calib, ScoreConfig(seed=1)) if a.base_ceiling else None
    res[key] = {"model": "mpnet-rt (trained, 110M)", "threads": a.threads, "fast_method": fm,
                "fast_probes": a.fast_probes or "default",
                "calibration": sum(len(b["labels"]) for b in prep.calib), "seconds": secs, "median_s": med,
                "fast_over_fisher": med[fm] / med["fisher"],
                "optin_est_s": est.meta.get("seconds"),
                "spearman": {f"{fm} vs optin-est": correlations(sc[fm], est),
                             f"{fm} vs {fm} (seed 1)": correlations(fast1, sc[fm]),
                             **({"optin-est vs optin-est (probe seed 1)": correlations(est1, est),
                                 f"{fm} (seed 1) vs optin-est (seed 1)": correlations(fast1, est1)}
                                if est1 is not None else {})}}
    print(json.dumps({k: v for k, v in res[key].items() if k != "seconds"}, indent=1), flush=True)
mine, res = res, (json.load(open(out)) if os.path.exists(out) else {})  # the parts run separately merge
res.update(mine)
with open(out, "w") as fh:
    json.dump(res, fh, indent=1)

plt = _plt()
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
parts = [(k, r) for k, r in res.items() if isinstance(r, dict) and "median_s" in r]
labels, values, colours = [], [], []
for j, (k, r) in enumerate(parts):
    for n, v in r["median_s"].items():
        labels.append(f"{k}: {n}")
        values.append(v)
        colours.append(f"C{j}")
axes[0].barh(labels, values, color=colours)
axes[0].tick_params(axis="y", labelsize=7)
axes[0].set_xscale("log")
axes[0].set_xlabel("scoring seconds, 128 snippets (median of interleaved rounds, log)")
dense_test = None
for k, r in res.items():
    if not (k.startswith("minilm") and isinstance(r, dict) and "test" in r.get("dense", {})):
        continue
    for m in dict.fromkeys(p["method"] for p in r["accuracy"]):
        pts = [p for p in r["accuracy"] if p["method"] == m]
        axes[1].errorbar([p["budget"] for p in pts], [100 * p["test"] for p in pts],
                         yerr=[100 * p["test_ci95"] for p in pts], marker="o", capsize=3,
                         label=f"{m} ({r.get('fast_probes')} probes)" if m == "optin-fast" else m)
    dense_test = r["dense"]["test"]["accuracy"]
for ref, name in ((README_EST, "optin-est (bench/README)"), (README_FISHER, "fisher (bench/README)")):
    axes[1].plot(list(ref), [100 * v for v in ref.values()], ":", marker="x", label=name)
if dense_test is not None:  # a minilm-rt part with a test split (--quick has none)
    axes[1].axhline(100 * dense_test, color="gray", ls="--", label="dense")
axes[1].set(xlabel="MACs kept (fraction of dense)", ylabel="minilm-rt test accuracy % (n=5,000, 95% CI)")
axes[1].legend(fontsize=7)
fig.suptitle("optin-fast vs optin-est vs Fisher: scoring time and masks-only accuracy", fontsize=10)
fig.tight_layout()
fig.savefig(os.path.join(RESULTS, "fast_estimator" + ("_quick" if a.quick else "") + ".png"), dpi=120)
