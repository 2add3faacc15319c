"""Scoring cost: exact trajectory scoring one candidate per pass vs batched passes (same scores),
the fast estimate, and Fisher, on minilm-rt; then the same methods on a BERT-base-sized model
(randomly initialised: timing only).

    python bench/scale.py [--part minilm|base|all] [--base-calib 32]

Writes bench/results/scale.json (and scale.png). Every scorer's time is linear in the number of
calibration snippets; the defaults keep the run short on 2 cores. On a 2-core machine exact scoring of BERT-base is
hours, so for it only the first `--base-passes` batched passes of each layer are timed and the
total is extrapolated per layer (stated as such in the JSON)."""
import argparse
import json
import os
import resource
import time

import torch
from common import RESULTS, mask_for, setup

from optin.adapters import adapter_for
from optin.importance import ScoreConfig, get_method
from optin.importance import trajectory as traj
from optin.plots import _plt
from optin.report import versions

ap = argparse.ArgumentParser()
ap.add_argument("--part", default="all", choices=["minilm", "base", "all"])
ap.add_argument("--minilm-calib", type=int, default=32, help="calibration snippets for the minilm-rt timings")
ap.add_argument("--base-calib", type=int, default=8, help="calibration snippets for the BERT-base timings")
ap.add_argument("--base-passes", type=int, default=1, help="batched passes timed per layer (exact, BERT-base)")
a = ap.parse_args()
out_path = os.path.join(RESULTS, "scale.json")
res = json.load(open(out_path)) if os.path.exists(out_path) else {}
res.update({"machine": f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, no GPU",
            "versions": versions()})


def timed(fn):
    t = time.time()
    r = fn()
    return r, time.time() - t


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


if a.part in ("minilm", "all"):
    S = setup(calib=a.minilm_calib, test=False)
    ad = S["adapter"]
    row = {"model": "minilm-rt", "calibration": a.minilm_calib, "candidates": None}
    # one candidate per pass vs batched passes, interleaved layer by layer (alternating which goes
    # first) so both see the same load; each layer's raw terms are concatenated into full scores
    orig, per_pass = traj._candidates, ScoreConfig().candidates_per_pass
    parts = {1: [], per_pass: []}
    secs = {1: 0.0, per_pass: 0.0}
    for i in range(ad.dims().num_layers):
        traj._candidates = lambda dd, proxy, gs, i=i: [c for c in orig(dd, proxy, gs) if c[0] == i]
        for k in ((1, per_pass) if i % 2 == 0 else (per_pass, 1)):
            s, t = timed(lambda: get_method("optin")(ad, S["calib"], ScoreConfig(candidates_per_pass=k)))
            parts[k].append(s.meta["raw"])
            secs[k] += t
        traj._candidates = orig
        print(f"layer {i}: one per pass {secs[1]:.1f} s, {per_pass} per pass {secs[per_pass]:.1f} s (cumulative)",
              flush=True)

    def joined(raws):
        r = dict(raws[0])
        r["md"], r["kd"], r["layer"] = (torch.cat([x[k] for x in raws]) for k in ("md", "kd", "layer"))
        r["kind"], r["units"] = sum((x["kind"] for x in raws), []), sum((x["units"] for x in raws), [])
        return traj.rescore(r, "normalized", ScoreConfig().lam)

    plain, fast = joined(parts[1]), joined(parts[per_pass])
    row["exact_plain_s"], row["exact_batched_s"], row["candidates_per_pass"] = secs[1], secs[per_pass], per_pass
    p, f = plain.meta["raw"], fast.meta["raw"]
    row["candidates"] = len(p["kind"])
    row["max_rel_diff"] = {k: float(((p[k] - f[k]).abs() / p[k].abs().clamp(min=1e-12)).max()) for k in ("md", "kd")}
    row["same_masks"] = {str(b): bool(torch.equal(mask_for(ad, plain, b).head_mask, mask_for(ad, fast, b).head_mask)
                                      and torch.equal(mask_for(ad, plain, b).neuron_mask,
                                                      mask_for(ad, fast, b).neuron_mask))
                         for b in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)}
    _, row["optin_est_s"] = timed(lambda: get_method("optin-est")(ad, S["calib"], ScoreConfig()))
    _, row["fisher_s"] = timed(lambda: get_method("fisher")(ad, S["calib"], ScoreConfig()))
    row["speedup_batched"] = row["exact_plain_s"] / row["exact_batched_s"]
    print(row, flush=True)
    res["minilm"] = row

if a.part in ("base", "all"):
    from transformers import BertConfig, BertForSequenceClassification
    from common import SEQ

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_labels=2)).eval()  # 12 × 768, 12 heads, FFN 3072
    ad = adapter_for(model)
    g = torch.Generator().manual_seed(0)
    n = a.base_calib
    batches = [{"input_ids": torch.randint(1000, 30000, (min(32, n - s), SEQ), generator=g),
                "attention_mask": torch.ones(min(32, n - s), SEQ, dtype=torch.long),
                "labels": torch.randint(0, 2, (min(32, n - s),), generator=g)} for s in range(0, n, 32)]
    row = {"model": "bert-base-uncased shape (random init)", "calibration": n, "seq_len": SEQ,
           "params_M": sum(p.numel() for p in model.parameters()) / 1e6}
    _, row["fisher_s"] = timed(lambda: get_method("fisher")(ad, batches, ScoreConfig()))
    print(f"BERT-base fisher {row['fisher_s']:.1f} s", flush=True)
    _, row["optin_est_s"] = timed(lambda: get_method("optin-est")(ad, batches, ScoreConfig()))
    print(f"BERT-base optin-est {row['optin_est_s']:.1f} s", flush=True)
    # exact: time the first passes of every layer, extrapolate to all candidates of that layer
    cfg = ScoreConfig()
    orig = traj._candidates
    d = ad.dims()
    per_layer = (d.num_heads + -(-d.ffn_size // cfg.group_size))  # candidates per layer
    _, t_cache = timed(lambda: traj._DenseCache(ad, batches, cfg.rows_per_batch, cfg.seed))
    timed_cands, measured = 0, 0.0
    est_total = t_cache  # the dense cache is built once per scoring
    for i in range(d.num_layers):
        def only_layer(dd, proxy, gs, i=i):
            c = [x for x in orig(dd, proxy, gs) if x[0] == i and x[1] == "neurons"]
            return c[:cfg.candidates_per_pass * a.base_passes]
        traj._candidates = only_layer
        _, t = timed(lambda: get_method("optin")(ad, batches, cfg))
        traj._candidates = orig
        k = cfg.candidates_per_pass * a.base_passes
        timed_cands += k
        measured += t
        est_total += max(t - t_cache, 0.0) / k * per_layer
        print(f"BERT-base exact layer {i}: {t:.1f} s for {k} candidates", flush=True)
    row.update({"exact_candidates": per_layer * d.num_layers, "exact_timed_candidates": timed_cands,
                "exact_timed_s": measured, "exact_extrapolated_s": est_total,
                "dense_cache_s": t_cache,
                "exact_note": "per layer: (timed run − dense cache) / timed candidates × candidates, + one dense cache",
                "peak_rss_gb": peak_rss_gb()})
    print(row, flush=True)
    res["bert_base"] = row

with open(out_path, "w") as fh:
    json.dump(res, fh, indent=1)
rows = [(k, v) for k, v in res.items() if isinstance(v, dict) and "fisher_s" in v]
if rows:
    plt = _plt()
    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 3.6), squeeze=False)
    for ax, (name, r) in zip(axes[0], rows):
        bars = {k: r[k] for k in ("exact_plain_s", "exact_batched_s", "exact_extrapolated_s", "optin_est_s",
                                  "fisher_s") if k in r}
        ax.barh(list(bars), list(bars.values()), color="tab:blue")
        ax.set_xscale("log")
        ax.set_xlabel("scoring seconds (log)")
        ax.set_title(f"{r['model']}, {r['calibration']} calib", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "scale.png"), dpi=120)
