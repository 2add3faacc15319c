"""Every importance method with and without the closed-form re-fit (optin.reconstruct), budgets
0.2-0.9, on minilm-rt, vit-fmnist, resnet-fmnist, lite0-fmnist and swin-fmnist-seg; times; paired
McNemar tests (classifiers).

Each point: scores on the 128 calibration examples (cached per method), the search's mask at the
budget, physically narrowed on a copy (CNNs: BatchNorm statistics re-estimated, as `optin prune`
does), evaluated, re-fit on `--recon-calib` calibration examples, evaluated again. Per-example
correctness is kept, so any two rows compare on the same examples (exact McNemar). A segmenter's
points are its task metric (optin.tasks: mIoU with a bootstrap interval over test images, and
pixel accuracy); the comparison with Fisher + re-fit is a paired bootstrap of the mIoU difference
over the same test images (optin.tasks.paired_difference), for rows computed in the same run.
`--split dev` evaluates on a seeded sample of the train split instead of test: settings are
chosen there, never on test.

    python bench/recon.py --model minilm-rt [--methods optin-est,fisher] [--budgets 0.2,0.3] [--split dev] [--test-limit N]
        [--recon-calib 512] [--damp 0.01] [--score-seed S] [--rows R] [--tag NAME] [--quick]

Writes bench/results/recon_{model}{_split}{_tag}.json (resumable: points already there are kept)
and a plot of accuracy against MACs with and without the re-fit."""
import argparse
import copy
import os
import random
import time

import torch
from common import RESULTS, ZOO_DATA, mcnemar, plot_accuracy, scores_cached

from optin.adapters import adapter_for
from optin.data import make_batches
from optin.evaluate import predictions
from optin.importance import ScoreConfig, get_method
from optin.io import read_json, write_json
from optin.iterative import select_masks, top_units
from optin.narrow import narrow
from optin.prune import SELECTIONS, PruneConfig, cost_model_for, dense_model_macs, prepare
from optin.recalibrate import batchnorms, recalibrate_batchnorm
from optin.reconstruct import ReconConfig, reconstruct
from optin.report import versions
from optin.search import search
from optin.spec import PruneSpec
from optin.tasks import metrics, paired_difference

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="minilm-rt", choices=sorted(ZOO_DATA))
ap.add_argument("--methods", default="optin-est,optin,fisher,magnitude,random")
ap.add_argument("--budgets", default="0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9")
ap.add_argument("--split", default="test", choices=["test", "dev"])
ap.add_argument("--dev-size", type=int, default=2000)
ap.add_argument("--test-limit", type=int, default=None,
                help="the first N test examples only (optin prune --eval-limit), for base-size models on CPU")
ap.add_argument("--recon-calib", type=int, default=512)
ap.add_argument("--damp", type=float, default=1e-2)
ap.add_argument("--no-recon", action="store_true", help="masks only (the 'before' column)")
ap.add_argument("--no-producers", action="store_true", help="re-fit only the consumers (not q/k/v, FFN input, conv1)")
ap.add_argument("--bn", default="before", choices=["before", "none", "after"],
                help="CNNs: re-estimate BatchNorm statistics before the re-fit (optin prune's order), not at all, or after")
ap.add_argument("--allocation", default=None, choices=["global", "even"],
                help="the search's sharing of the budget across layers (optin.search); default: the family's")
ap.add_argument("--score-seed", type=int, default=0,
                help="the scorers' probe / sampling seed (ScoreConfig.seed): another seed shows a method's own noise")
ap.add_argument("--rows", type=int, default=ScoreConfig.rows_per_batch,
                help="Gram rows per calibration batch for the trajectory scorers (ScoreConfig.rows_per_batch); "
                     "a number above a batch's real tokens uses them all (bench/gram_rows.py)")
ap.add_argument("--select", default="one-shot", choices=SELECTIONS,
                help="iterative: block by block on the re-fit model (optin.iterative), rows named METHOD+iter; "
                     "iterative-units: each block keeps the one-shot count, the rounds choose which (METHOD+iter-units); "
                     "refit-split: the one-shot search's 5 best head/neuron splits, the closest to dense after a re-fit (METHOD+split)")
ap.add_argument("--counts-from", default=None, metavar="METHOD",
                help="keep METHOD's per-layer head and neuron counts at each budget; this method's scores choose "
                     "which units (rows named METHOD_A@METHOD-counts): separates allocation from unit choice")
ap.add_argument("--tag", default="")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--quick", action="store_true", help="budgets 0.3,0.5; optin-est and fisher; 1,000 examples")
ap.add_argument("--table", action="store_true", help="print the saved results as a Markdown table and exit")
a = ap.parse_args()


def table(path):
    """Markdown: accuracy (points) before → after the re-fit per method and budget, the drop
    from dense after it, and the exact McNemar p against Fisher + re-fit on the same examples."""
    res = read_json(path)
    dense = 100 * res["dense"]["accuracy"]
    metric = res["dense"].get("metric", "accuracy")
    print(f"{res['model']} ({res['split']}, n = {res['dense']['n']}): dense {metric} {dense:.2f}%\n")
    print(f"| method | MACs kept | {metric}, masks only | + re-fit | drop | re-fit s | vs fisher + re-fit (p) |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(res["rows"], key=lambda r: (r["method"], r["budget"])):
        if "after" not in r:
            continue
        after = 100 * r["after"]["accuracy"]
        ref = next((q for q in res["rows"] if q["method"] == "fisher" and q["budget"] == r["budget"]
                    and "after_correct" in q and q is not r), None)
        vs = mcnemar(r["after_correct"], ref["after_correct"]) if ref else r.get("vs_fisher_after")
        if vs and "diff" in vs:  # a segmenter's paired bootstrap of the mIoU difference
            p = f"p = {vs['p']:.2g}" if vs["p"] > 0 else f"p < {2 / vs['resamples']:.2g}"  # none of the resamples crossed 0
            vs = f"{100 * vs['diff']:+.2f} [{100 * vs['ci95'][0]:+.2f}, {100 * vs['ci95'][1]:+.2f}] ({p})"
        else:
            vs = f"+{vs['a_only']} / −{vs['b_only']} (p = {vs['p']:.2g})" if vs else ""
        print(f"| {r['method']} | {r['mac_ratio']:.3f} | {100 * r['before']['accuracy']:.2f} | {after:.2f} "
              f"± {100 * r['after']['ci95']:.2f} | {dense - after:.2f} | {r['recon_s']:.0f} | {vs} |")


suffix = f"_{a.model}" + ("" if a.split == "test" else "_dev") + (f"_{a.tag}" if a.tag else "") + \
    ("_quick" if a.quick else "")
out_json = os.path.join(RESULTS, f"recon{suffix}.json")
if a.table:
    table(out_json)
    raise SystemExit
if a.quick:
    a.budgets, a.methods, a.dev_size = "0.3,0.5", "optin-est,fisher", 1000
torch.set_num_threads(a.threads)
quiet = lambda *_: None  # noqa: E731

prep = prepare(a.model, ZOO_DATA[a.model], PruneConfig(recon=ReconConfig(calib=a.recon_calib), eval_limit=a.test_limit),
               log=quiet)
model, ad, seq, calib = prep.model, prep.adapter, prep.seq, prep.calib
if a.split == "dev":  # a seeded sample of the train split (the model saw it in training: for choosing only)
    dev = random.Random(1).sample(prep.data.split("train"), a.dev_size)
    from optin.data import encode_labels
    c = model.config
    dev = encode_labels(dev, {str(k): int(v) for k, v in (c.label2id or {}).items()}, c.num_labels, "dev")
    evalb = make_batches(prep.tok, dev, 64, seq)
else:
    evalb = prep.test[:16] if a.quick else prep.test
labels = torch.cat([b["labels"] for b in evalb])
dense_macs = dense_model_macs(ad, seq)
res = read_json(out_json) or {"model": a.model, "split": a.split, "rows": []}
done = {(r["method"], r["budget"]) for r in res["rows"]}


SEG = ad.task.name == "segmentation"


def per_layer_topk(scores, like):
    """A mask keeping, in each layer, as many units as `like` does: the best by `scores`."""
    return torch.stack([top_units(scores[i], int(k)) for i, k in enumerate(like.sum(1))])


def correct(m):
    """Per-example correctness (classifiers), or per-image confusion counts (segmenters)."""
    if SEG:
        return ad.task.confusions(m, evalb)
    return (predictions(m, evalb) == labels).tolist()


def acc(v):
    if SEG:
        return {k: x for k, x in metrics(v).items() if k != "iou"}
    p = sum(v) / len(v)
    return {"accuracy": p, "ci95": 1.96 * (max(p * (1 - p), 1e-12) / len(v)) ** 0.5}


if "dense" not in res:
    c0 = correct(model)
    res["dense"] = {"n": len(labels), **acc(c0)}  # a segmenter's metric dict counts images
    if not SEG:
        res["dense_correct"] = c0
print(f"{a.model} dense {ad.task.metric} {res['dense']['accuracy']:.4f} on {res['dense']['n']} {a.split} examples",
      flush=True)
cfg = ReconConfig(damp=a.damp, calib=a.recon_calib, producers=not a.no_producers)
confs = {}  # segmenters: per-image confusions after the re-fit, this run's rows only (paired bootstrap)
for method in a.methods.split(","):
    name = method + {"one-shot": "", "refit-split": "+split", "iterative": "+iter",
                   "iterative-units": "+iter-units"}[a.select] + \
        (f"@{a.counts_from}-counts" if a.counts_from else "")
    todo = [b for b in map(float, a.budgets.split(",")) if (name, b) not in done]
    if not todo:
        continue
    t0 = time.time()
    score_cfg = ScoreConfig(seed=a.score_seed, rows_per_batch=a.rows)
    cache = f"{a.model}-c128" + (f"-s{a.score_seed}" if a.score_seed else "") + \
        (f"-r{a.rows}" if a.rows != ScoreConfig.rows_per_batch else "")  # runs/cache: scored once per model
    scores = scores_cached(ad, calib, method, score_cfg, cache)
    t_score = scores.meta.get("seconds", time.time() - t0)
    if a.counts_from:  # the method whose per-layer counts every budget keeps
        other = scores_cached(ad, calib, a.counts_from, score_cfg, cache)
    for budget in todo:
        ts = time.time()
        # iterative rounds re-score (not cached)
        hm, nm, rounds = select_masks(a.select, ad, scores,
                                      lambda w: get_method(method)(w, calib, score_cfg),
                                      cost_model_for(ad, seq), budget * dense_macs, ad.default_align,
                                      a.allocation or ad.default_allocation, None if a.no_recon else prep.recon, cfg)
        if a.counts_from:
            r = search(other.heads, other.neurons, cost_model_for(ad, seq), budget * dense_macs, ad.default_align,
                       a.allocation or ad.default_allocation)
            hm, nm = per_layer_topk(scores.heads, r.head_mask), per_layer_topk(scores.neurons, r.neuron_mask)
        spec = PruneSpec.from_masks(model.config.model_type, hm, nm, dims=ad.dims())
        t_select = time.time() - ts
        m = copy.deepcopy(model)
        pa = adapter_for(m)
        narrow(pa, spec)
        if batchnorms(m) and a.bn == "before":
            recalibrate_batchnorm(m, calib, ad.input_names())
        before = correct(m)
        row = {"method": name, "budget": budget, "mac_ratio": ad.spec_macs(spec, seq) / dense_macs,
               "scoring_s": t_score, "selection_s": t_select, "rounds": rounds, "heads": spec.kept_heads, "neurons": spec.kept_neurons,
               "before": acc(before), **({} if SEG else {"before_correct": before})}
        if not a.no_recon:
            t1 = time.time()
            rep = reconstruct(ad, pa, prep.recon, spec, cfg)
            if batchnorms(m) and a.bn == "after":
                recalibrate_batchnorm(m, calib, ad.input_names())
            row["recon_s"] = time.time() - t1
            after = correct(m)
            row["eval_s"] = time.time() - t1 - row["recon_s"]
            if SEG:
                confs[(name, budget)] = after
            row.update(after=acc(after), **({} if SEG else {"after_correct": after}),
                       errors=[[s["before"], s["after"]] for blk in rep["layers"] for s in blk])
        res["rows"].append(row)
        done.add((name, budget))
        print(f"{name:10s} {budget:.1f} MACs {row['mac_ratio']:.3f}: {row['before']['accuracy']:.4f}"
              + (f" → re-fit {row['after']['accuracy']:.4f} ({row['recon_s']:.0f} s)" if "after" in row else "")
              + f"  scoring {t_score:.0f} s", flush=True)
        res.update(recon_calib=a.recon_calib, damp=a.damp, score_seed=a.score_seed, rows_per_batch=a.rows, calibration=len(calib) and sum(len(b["labels"]) for b in calib),
                   versions=versions())
        write_json(out_json, res)

# paired tests: every method against fisher at each budget, after the re-fit
rows = res["rows"]
for r in rows:
    ref = next((q for q in rows if q["method"] == "fisher" and q["budget"] == r["budget"]), None)
    if ref is not None and r is not ref and "after_correct" in r and "after_correct" in ref:
        r["vs_fisher_after"] = mcnemar(r["after_correct"], ref["after_correct"])
    key, kref = (r["method"], r["budget"]), ref and (ref["method"], ref["budget"])
    if ref is not None and r is not ref and key in confs and kref in confs:
        r["vs_fisher_after"] = paired_difference(confs[key], confs[kref])
write_json(out_json, res)
plot_rows = [{"method": f"{r['method']} + re-fit", "budget": r["budget"], **r["after"]} for r in rows if "after" in r]
plot_rows += [{"method": r["method"], "budget": r["budget"], **r["before"]} for r in rows]
plot_accuracy(plot_rows, res["dense"], os.path.join(RESULTS, f"recon{suffix}.png"),
              f"{a.model}: masks, and masks + closed-form re-fit ({a.split})",
              ylabel=f"{a.split} {ad.task.metric} %")
