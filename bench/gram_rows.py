"""How much of a trajectory scorer's seed noise is the sampling of Gram rows? minilm-rt, 128
calibration snippets (4 batches of 32, about 900 real tokens each): `optin-est` and
`optin-fast-depth` with 256 Gram rows per batch (ScoreConfig.rows_per_batch, the default), 512,
and every real token, each with probe seeds 0 and 1. The seed draws both the rows and the
probes, so with every token the seed-to-seed agreement is the probes' noise alone. Spearman over
all heads and neurons (and heads, neurons alone); seconds per scorer, timed in one process, interleaved
seed by seed (medians of the two seeds). Fisher (one example at a time) once per seed, for the
ratio.

    python bench/gram_rows.py

Writes bench/results/gram_rows.{json,png}."""
import os
import statistics
import time

import torch
from common import RESULTS, correlations, setup

from optin.importance import ScoreConfig, get_method
from optin.io import write_json
from optin.plots import _plt
from optin.report import versions

ROWS = {"256": 256, "512": 512, "all": 1 << 20}  # more than a batch holds = every real token
METHODS = ("optin-est", "optin-fast-depth")


S = setup(calib=128, test=False)
ad, cal = S["adapter"], S["calib"]
scores, secs = {}, {}
for seed in (0, 1):
    for method, rows in [("fisher", None)] + [(m, r) for r in ROWS for m in METHODS]:
        cfg = ScoreConfig(seed=seed, rows_per_batch=ROWS.get(rows, ScoreConfig.rows_per_batch))  # Fisher reads no rows
        t0 = time.perf_counter()
        scores[method, rows, seed] = get_method(method)(ad, cal, cfg)
        secs.setdefault((method, rows), []).append(time.perf_counter() - t0)
        print(f"seed {seed}: {method} rows {rows}: {secs[method, rows][-1]:.1f} s", flush=True)

fisher_s = statistics.median(secs["fisher", None])
out = {"model": "minilm-rt", "calibration": 128, "threads": torch.get_num_threads(),
       "real_tokens_per_batch": [int(b["attention_mask"].sum()) for b in cal],
       "fisher_s": fisher_s, "rows": {}, "versions": versions()}
for rows in ROWS:
    r = {}
    for m in METHODS:
        r[m] = {"seconds": statistics.median(secs[m, rows]),
                "over_fisher": statistics.median(secs[m, rows]) / fisher_s,
                "seed0_vs_seed1": correlations(scores[m, rows, 0], scores[m, rows, 1]),
                "vs_256_rows_seed0": correlations(scores[m, rows, 0], scores[m, "256", 0])}
    r["fast_depth_vs_est"] = {f"seed{s}": correlations(scores["optin-fast-depth", rows, s], scores["optin-est", rows, s])
                              for s in (0, 1)}
    out["rows"][rows] = r
    print(rows, {m: (round(r[m]["seed0_vs_seed1"]["all"], 4), round(r[m]["over_fisher"], 2)) for m in METHODS},
          "fast-depth vs est", [round(v["all"], 4) for v in r["fast_depth_vs_est"].values()])
write_json(os.path.join(RESULTS, "gram_rows.json"), out)

plt = _plt()
fig, ax = plt.subplots(figsize=(6.4, 3.6))
x = range(len(ROWS))
for k, (label, get) in enumerate([
        ("optin-est vs itself, seed 1", lambda r: r["optin-est"]["seed0_vs_seed1"]["all"]),
        ("optin-fast-depth vs itself, seed 1", lambda r: r["optin-fast-depth"]["seed0_vs_seed1"]["all"]),
        ("optin-fast-depth vs optin-est, same seed", lambda r: r["fast_depth_vs_est"]["seed0"]["all"])]):
    ax.bar([i + 0.27 * (k - 1) for i in x], [get(out["rows"][r]) for r in ROWS], 0.27, label=label)
ax.set_xticks(list(x), [f"{r} rows" for r in ROWS])
ax.set_ylim(0.95, 1.0)
ax.set_ylabel("Spearman, all heads + neurons")
ax.set_title("minilm-rt, 128 snippets: Gram rows and scorer agreement")
ax.legend(fontsize=7, loc="lower right")
fig.tight_layout()
fig.savefig(os.path.join(RESULTS, "gram_rows.png"), dpi=120)
