"""How strict the INT8 sensitivity search should be, chosen on dev data (never test).

`optin engine --int8` leaves nodes in float until the quantised graph's argmax agreement with
float32 on held-out calibration examples reaches `--int8-min-agreement` (export/quantize.py).
Each node left in float costs speed. For each pruned (or dense) model folder and each candidate
target, this builds the engine's INT8 graph with the real search (export.quantize.quantize_int8,
default dynamic settings), then measures on a seeded sample of the *train* split (the dev set of
bench/recon.py: 2,000 examples, for choosing only) the accuracy of float32 and of that graph, and
times the two interleaved (ONNX Runtime CPU, b8 × 64 real tokens for text).

    python bench/int8_exclusion.py DIR|MODEL [...] [--targets 0.95,0.97,0.99] [--iters 100] [--out NAME]
    python bench/int8_exclusion.py DIR --targets 0.01 [--no-per-channel] --out NAME   # every node quantised
    python bench/int8_exclusion.py DIR --mode static [--per-channel] --targets 0.97 --out NAME
    python bench/int8_exclusion.py --plot-only

DIR is a folder written by `optin prune`; MODEL a zoo name (bench/common.py ZOO_DATA): its
dense model, exported once into runs/int8/dense-MODEL. `make bench-int8` prunes the folders of
bench/README.md and runs this on them.

Writes bench/results/int8_exclusion[_NAME].json and .png (dev accuracy against speedup over the
folder's float32 graph, one line per folder, a point per target)."""
import argparse
import json
import os
import random
import tempfile

import numpy as np
import torch
from common import RESULTS, ZOO_DATA, interleaved_ms, ort_session

from export.accuracy import predictions
from export.onnx import ensure_onnx, export_onnx
from export.quantize import QuantConfig, quantize_int8
from export.samples import load, source_id
from export.taskdata import batches, split_config
from optin.adapters import adapter_for
from optin.data import load_data
from optin.io import read_json, write_json
from optin.plots import _plt
from optin.report import versions
from optin.zoo import resolve_model

ap = argparse.ArgumentParser()
ap.add_argument("dirs", nargs="*")
ap.add_argument("--targets", default="0.95,0.97,0.99")
ap.add_argument("--dev-size", type=int, default=2000)
ap.add_argument("--iters", type=int, default=100)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--out", default="")
ap.add_argument("--mode", default="dynamic", choices=("dynamic", "static"), help="INT8 mode (export/quantize.py)")
ap.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=None,
                help="per-channel weight scales (default: export/quantize.py's, per-channel except static with Conv)")
ap.add_argument("--plot-only", action="store_true", help="redraw the plot from the JSON written before")
a = ap.parse_args()
torch.set_num_threads(a.threads)
targets = [float(t) for t in a.targets.split(",")]
quiet = lambda *_: None  # noqa: E731


def folder(d: str) -> str:
    if os.path.isdir(d):
        return d
    if d not in ZOO_DATA:
        raise SystemExit(f"{d}: neither a folder nor one of {', '.join(sorted(ZOO_DATA))}")
    out = os.path.normpath(os.path.join(RESULTS, "..", "..", "runs", "int8", f"dense-{d}"))
    if not os.path.exists(os.path.join(out, "model.onnx")):
        export_onnx(source_id(resolve_model(d)), out_dir=out, data=ZOO_DATA[d], log=quiet)
    return out


def dev_inputs(loaded):
    cfg = split_config(loaded) or {}
    ds = load_data(loaded.meta["data"], calib=int(cfg.get("calib") or 128), seed=int(cfg.get("seed") or 0))
    ex = random.Random(1).sample(ds.split("train"), a.dev_size)
    ad = adapter_for(loaded.model)
    ex = ad.task.encode_labels(ex, loaded.model.config, "dev")
    bs = batches(loaded, ex, 64)
    feeds = [{k: b[k].numpy() for k in loaded.input_names} for b in bs]
    return feeds, np.concatenate([b["labels"].numpy() for b in bs])


def accuracy(sess, inputs, labels) -> float:
    return float((predictions(lambda f: {"logits": sess.run(None, f)[0]}, inputs) == labels).mean())


def label_of(d: str) -> str:
    rep = read_json(os.path.join(d, "report.json"), {}) or {}
    if rep:
        return f"{rep['model']} at {rep['budget']:g} of MACs"
    src = (read_json(os.path.join(d, "export.json"), {}) or {}).get("source") or d
    return f"{os.path.basename(src.rstrip('/'))} dense"


name = "int8_exclusion" + (f"_{a.out}" if a.out else "")
rows = read_json(os.path.join(RESULTS, name + ".json"))["rows"] if a.plot_only else []
for d in [] if a.plot_only else map(folder, a.dirs):
    loaded = load(d, log=quiet)
    src = ensure_onnx(d, "model.onnx", log=quiet)
    inputs, labels = dev_inputs(loaded)
    ad = adapter_for(loaded.model)
    timing = {k: v.numpy() for k, v in ad.random_inputs(8, 64, torch.Generator().manual_seed(0)).items()
              if k in loaded.input_names}
    fp32 = ort_session(src, a.threads)
    row = {"dir": d, "label": label_of(d), "fp32_dev_accuracy": accuracy(fp32, inputs, labels),
           "dev_examples": len(labels), "targets": []}
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {"fp32": fp32}
        for t in targets:
            out = os.path.join(tmp, f"int8_{t}.onnx")
            qcfg = QuantConfig(mode=a.mode, min_agreement=t, per_channel=a.per_channel)
            info = quantize_int8(src, out, qcfg, loaded, threads=a.threads, log=quiet)
            sessions[t] = ort_session(out, a.threads)
            row["targets"].append({"min_agreement": t, "float_nodes": len(info["excluded_nodes"]),
                                   "quantizable_nodes": info["quantizable_nodes"], "check": info["check"],
                                   "per_channel": info["per_channel"], "mode": info["mode"],
                                   "dev_accuracy": accuracy(sessions[t], inputs, labels)})
            print(d, t, row["targets"][-1], flush=True)
        ms = interleaved_ms(sessions, timing, a.iters)
    row["fp32_ms"] = ms["fp32"]
    for r in row["targets"]:
        r["ms"], r["speedup_over_fp32"] = ms[r["min_agreement"]], ms["fp32"] / ms[r["min_agreement"]]
        r["dev_drop_points"] = 100 * (row["fp32_dev_accuracy"] - r["dev_accuracy"])
    rows.append(row)
    print(json.dumps({k: v for k, v in row.items() if k != "targets"}), flush=True)

if not a.plot_only:
    write_json(os.path.join(RESULTS, name + ".json"), {"rows": rows, "threads": a.threads, "iters": a.iters,
                                                       "shape": "b8 x 64", "versions": versions()})
plt = _plt()
fig, ax = plt.subplots(figsize=(6.4, 4.2))
for row in rows:
    xs = [r["speedup_over_fp32"] for r in row["targets"]]
    ys = [100 * r["dev_accuracy"] for r in row["targets"]]
    ax.plot(xs, ys, "o-", label=row.get("label") or label_of(row["dir"]))
    for r, x, y in zip(row["targets"], xs, ys):  # label each distinct graph once (equal targets often give the same)
        same = [q for q in row["targets"] if q["float_nodes"] == r["float_nodes"]]
        if r is same[-1]:
            targets_text = "/".join(format(q["min_agreement"], "g") for q in same)
            ax.annotate(f"{targets_text}: {r['float_nodes']} float", (x, y),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(100 * row["fp32_dev_accuracy"], ls=":", lw=0.8, color=ax.lines[-1].get_color())
ax.set_xlabel("INT8 speedup over the folder's float32 graph (ORT CPU, b8 x 64)")
ax.set_ylabel("dev accuracy (%)  (dotted: float32)")
ax.set_title("INT8 search target: speed against dev accuracy")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(os.path.join(RESULTS, name + ".png"), dpi=120)
print("wrote", os.path.join(RESULTS, name + (".png" if a.plot_only else ".{json,png}")))
