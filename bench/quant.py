"""Pruning × precision: dense and pruned models at float32, INT8 dynamic and INT8 static, on
ONNX Runtime CPU — measured speedup over the dense float32 model against test accuracy, the
curve a user picks a deployment point on.

Everything goes through the library: each budget is pruned with `optin.prune.prune` and its
PruneConfig (so a change to the pruner, such as a weight re-fit, shows up here on the next
run), exported with parity (`export_onnx`), built with `build_engine` (which scores the engine on
the test split and writes engine.json), then timed against the dense float32 model interleaved
(`profiling.latency.compare`, 2 intra-op threads, no spinning, batch 8 × 64 real tokens for
text; batch 8 real images for the vision models).

Resumable: every point is written to the results JSON as soon as it is measured and skipped on
the next run while its key (model, budget, precision, settings, and a hash of the optin/ and
export/ sources) is unchanged; pruned folders are cached under runs/quant/ the same way. Points
of older code stay in the file; the table (`--table`) and the plot show the latest point of each
(model, budget, precision) and say which code hashes they come from.
Zoo models are never built here: a model whose zoo folder is missing is skipped, said.

    python bench/quant.py [--models minilm-rt,vit-fmnist,resnet-fmnist] [--budgets 0.3,...,0.9]
                          [--precisions fp32,int8-dynamic,int8-static[,int8-static-pc]] [--iters 200]
                          [--quick]

Writes bench/results/quant{_quick}.json and .png.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict

from common import QUIET, RESULTS, SEQ, SPEED_BATCH, SPEED_THREADS, ZOO_DATA

from export.engines import EngineConfig, build_engine
from export.onnx import export_onnx
from export.quantize import QuantConfig
from optin.errors import OptinError
from optin.io import read_json, write_json
from optin.prune import PruneConfig, prune
from optin.report import versions
from optin.zoo import cache_dir

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, "..", "runs", "quant")
MODELS = ("minilm-rt", "vit-fmnist", "resnet-fmnist")
PRECISIONS = {"fp32": dict(), "int8-dynamic": dict(int8=True, quant=QuantConfig(mode="dynamic")),
              "int8-static": dict(int8=True, quant=QuantConfig(mode="static")),
              # static with per-channel weight scales: not the default (unmeasured until this grid)
              "int8-static-pc": dict(int8=True, quant=QuantConfig(mode="static", per_channel=True))}
KEEP = ("config.json", "spec.json", "optin.json", "report.json", "model.safetensors", "model.onnx", "export.json",
        "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "preprocessor_config.json")


def code_hash() -> str:
    """The pruner's and exporter's sources: a cached point is stale once either changes."""
    h = hashlib.sha256()
    for f in sorted(glob.glob(os.path.join(HERE, "..", "optin", "**", "*.py"), recursive=True)
                    + glob.glob(os.path.join(HERE, "..", "export", "**", "*.py"), recursive=True)):
        h.update(open(f, "rb").read())
    return h.hexdigest()[:16]


def pruned_dir(model: str, budget: float, pcfg: PruneConfig, code: str) -> str:
    """The model pruned to `budget` through optin.prune.prune, exported; cached while its config
    and the code are the same."""
    out = os.path.join(WORK, model, f"b{budget:.2f}")
    key = {"config": asdict(pcfg) | {"score": asdict(pcfg.score)}, "code": code}
    if read_json(os.path.join(out, "bench_key.json")) == key and os.path.exists(os.path.join(out, "model.onnx")):
        return out
    prune(model, ZOO_DATA[model], out, pcfg, log=QUIET)
    export_onnx(out, log=QUIET)
    write_json(os.path.join(out, "bench_key.json"), key)
    return out


def dense_dir(model: str, pcfg: PruneConfig) -> str:
    """The dense model exported, with the pruner's split settings so it is scored on the same test examples."""
    out = os.path.join(WORK, model, "dense")
    if not os.path.exists(os.path.join(out, "model.onnx")):
        exp = export_onnx(os.path.join(cache_dir(), model), out_dir=out, data=ZOO_DATA[model], log=QUIET)
        write_json(os.path.join(out, "export.json"),
                   exp | {"split": {"calib": pcfg.calib, "seed": pcfg.seed, "eval_limit": pcfg.eval_limit}})
    return out


def variant(src: str, precision: str) -> str:
    """A folder per precision beside src, its files hard-linked from src (each holds one engine)."""
    out = f"{src}-{precision}"
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    for f in os.listdir(src):
        if f in KEEP:
            try:
                os.link(os.path.join(src, f), os.path.join(out, f))
            except OSError:
                shutil.copyfile(os.path.join(src, f), os.path.join(out, f))
    return out


def measure(folder: str, dense: str, precision: str, eval_limit, iters: int) -> dict:
    from export.samples import fixed_inputs, load
    from profiling.latency import compare, model_macs, open_runner

    ecfg = EngineConfig(threads=SPEED_THREADS, eval_limit=eval_limit, **PRECISIONS[precision])
    t0 = time.time()
    eng = build_engine(folder, "onnxruntime", ecfg, log=QUIET)
    built = time.time() - t0
    loaded = load(folder, log=QUIET)
    inputs, source = fixed_inputs(loaded, SPEED_BATCH, SEQ)
    target = open_runner("onnxruntime", folder, ecfg, loaded, log=QUIET)
    base = open_runner("onnxruntime", dense, EngineConfig(threads=SPEED_THREADS), log=QUIET)
    c = compare(base, target, inputs, iters=iters, warmup=20)
    seq = next(iter(inputs.values())).shape[1] if "input_ids" in inputs else None
    macs_d, _ = model_macs(dense, seq or SEQ)
    macs_p, _ = model_macs(folder, seq or SEQ)
    acc, q = eng["accuracy"], eng.get("quantization") or {}
    return {"precision": precision, "speedup": c["speedup"], "speedup_ci95": c["speedup_ci95"],
            "dense_ms": c["a"]["latency_ms"]["median"], "ms": c["b"]["latency_ms"]["median"],
            "cv": [c["a"]["cv"], c["b"]["cv"]], "mac_ratio": macs_p / macs_d, "inputs": source,
            "accuracy": acc.get("engine"), "accuracy_ci95": acc.get("ci95"), "torch_accuracy": acc.get("torch"),
            "dense_accuracy": acc.get("dense"), "agreement_with_torch": acc.get("agreement_with_torch"),
            "n": acc.get("n"), "parity": eng["parity"]["max_abs_diff"], "providers": eng["providers"],
            "excluded_nodes": len(q.get("excluded_nodes", [])), "quantizable_nodes": q.get("quantizable_nodes"),
            "calibration_agreement": (q.get("check") or {}).get("agreement"),
            "bytes": os.path.getsize(os.path.join(folder, "engine", "model.int8.onnx")) if q else
            os.path.getsize(os.path.join(folder, "model.onnx")), "build_s": built,
            "loadavg": os.getloadavg()[0]}  # the machine is shared: how loaded it was while timing


def plot(rows: list[dict], path: str, title: str) -> None:
    """Test accuracy against measured speedup, one panel per model, one line per precision
    (dense first, then the budgets from the largest), error bars the 95% intervals."""
    from optin.plots import _plt

    plt = _plt()
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        for prec in PRECISIONS:
            # joined in budget order (dense, 0.9, ..., 0.3): the path a tightening budget takes
            pts = sorted((r for r in rows if r["model"] == model and r["precision"] == prec),
                         key=lambda r: -(r["budget"] or 1.01))
            if not pts:
                continue
            ax.errorbar([p["speedup"] for p in pts], [100 * p["accuracy"] for p in pts],
                        yerr=[100 * p["accuracy_ci95"] for p in pts], marker="o", ms=4, capsize=2, label=prec)
            for p in pts:
                ax.annotate("dense" if p["budget"] is None else f"{p['budget']:.1f}", (p["speedup"], 100 * p["accuracy"]),
                            textcoords="offset points", xytext=(3, 4), fontsize=7)
        ax.set(xlabel="measured speedup over dense float32 (ORT CPU, 2 threads, b8)", ylabel="test accuracy (%)")
        ax.set_title(model, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def latest(points: dict) -> list[dict]:
    """One row per (model, budget, precision): the last one written wins, so a re-measurement
    (other --iters, or the code changed since) supersedes its cell. Each row says its code hash;
    refused engines are rows with an "error"."""
    keys = {k: json.loads(k) for k in points}
    return list({tuple(keys[k][:3]): r | {"code": keys[k][-1]} for k, r in points.items()}.values())


def mac_label(budget, measured: list[dict]) -> str:
    """A row's MACs column: the measured ratio (channel blocks can miss the budget), else the budget."""
    return "dense" if budget is None else f"{measured[0]['mac_ratio']:.1%}" if measured else f"{budget:.0%}"


def table(rows: list[dict]) -> str:
    """The grid as markdown: speedup over dense float32 / test accuracy, a row per model and budget."""
    precs = [p for p in PRECISIONS if any(r["precision"] == p for r in rows)]
    out = ["| model | MACs | " + " | ".join(precs) + " |", "|---|---|" + "---|" * len(precs)]
    for model in dict.fromkeys(r["model"] for r in rows):
        cells: dict = {}
        for r in rows:
            if r["model"] == model:
                cells.setdefault(r["budget"], {})[r["precision"]] = r
        for budget in sorted(cells, key=lambda b: -1 if b is None else b):
            got = cells[budget]
            mac = mac_label(budget, [r for r in got.values() if "error" not in r])
            out.append(f"| {model} | {mac} | " + " | ".join(
                "" if p not in got else f"refused: {got[p]['error'].rsplit(': ', 1)[-1]}" if "error" in got[p] else
                f"{got[p]['speedup']:.2f}x / {got[p]['accuracy']:.2%}" for p in precs) + " |")
    # what pruning gains at each precision: pruned over dense of the same precision, as a part of
    # the MAC-implied ratio (issue: at least 0.9). Both speedups are over the same dense float32.
    out += ["", "| model | MACs | " + " | ".join(f"{p}: pruned / dense, of MAC-implied" for p in precs) + " |",
            "|---|---|" + "---|" * len(precs)]
    for model in dict.fromkeys(r["model"] for r in rows):
        ok = {(r["budget"], r["precision"]): r for r in rows if r["model"] == model and "error" not in r}
        for budget in sorted({b for b, _ in ok if b is not None}):
            cell = []
            for p in precs:
                r, d = ok.get((budget, p)), ok.get((None, p))
                cell.append(f"{r['speedup'] / d['speedup']:.2f}x / {1 / r['mac_ratio']:.2f}x "
                            f"({r['speedup'] / d['speedup'] * r['mac_ratio']:.2f})" if r and d else "")
            mac = mac_label(budget, [r for (b, _), r in ok.items() if b == budget])
            out.append(f"| {model} | {mac} | " + " | ".join(cell) + " |")
    return "\n".join(out)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--budgets", default="0.3,0.4,0.5,0.6,0.7,0.8,0.9")
    ap.add_argument("--precisions", default="fp32,int8-dynamic,int8-static", help=f"of {', '.join(PRECISIONS)}")
    ap.add_argument("--method", default=PruneConfig.method)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--eval-limit", type=int, default=None, help="test examples (default: the whole test split)")
    ap.add_argument("--quick", action="store_true", help="budget 0.6, 60 iterations, 1,000 test examples")
    ap.add_argument("--table", action="store_true", help="print the measured grid as markdown; measure nothing")
    a = ap.parse_args(argv)
    if set(a.precisions.split(",")) - set(PRECISIONS):
        ap.error(f"unknown precision in --precisions {a.precisions}; known: {', '.join(PRECISIONS)}")
    if a.quick:
        a.budgets, a.iters, a.eval_limit = "0.6", 60, a.eval_limit or 1000
    name = "quant_quick" if a.quick else "quant"
    out_json = os.path.join(RESULTS, f"{name}.json")
    code = code_hash()
    result = read_json(out_json) or {}
    # points measured with other code (the pruner or the engines changed since) are kept, never
    # dropped, and re-measured: the key holds the code hash, so they are not skipped
    points = dict(result.get("points", {}))
    if a.table:
        rows = latest(points)
        print(table(rows))
        stale = sorted({r["code"] for r in rows} - {code})
        print(f"\ncode hash now {code}" + (f"; rows measured with other code: {', '.join(stale)}" if stale else ""))
        return result
    for model in a.models.split(","):
        if not os.path.exists(os.path.join(cache_dir(), model, "optin_zoo.json")):
            print(f"quant: {model}: zoo folder {os.path.join(cache_dir(), model)} is not built; skipped", flush=True)
            continue
        for budget in [None] + [float(b) for b in a.budgets.split(",")]:
            pcfg = PruneConfig(flops=budget or 1.0, method=a.method, eval_limit=a.eval_limit, fvcore=False)
            for prec in a.precisions.split(","):
                key = json.dumps([model, budget, prec, a.iters, a.eval_limit, a.method, code])
                if key in points:
                    continue
                dense = dense_dir(model, pcfg)
                base = dense if budget is None else pruned_dir(model, budget, pcfg, code)
                try:
                    row = {"model": model, "budget": budget, **measure(variant(base, prec), dense, prec, a.eval_limit,
                                                                       a.iters)}
                except OptinError as e:  # a refused engine (parity) is a result too: recorded, not fatal
                    points[key] = {"model": model, "budget": budget, "precision": prec, "error": str(e)}
                    print(f"quant: {model} {budget} {prec}: {type(e).__name__}: {e}", flush=True)
                    continue
                points[key] = row
                print(f"quant: {model} {'dense' if budget is None else f'@{budget:.1f}'} {prec}: "
                      f"{row['speedup']:.2f}x [{row['speedup_ci95'][0]:.2f}, {row['speedup_ci95'][1]:.2f}], "
                      f"accuracy {row['accuracy']:.2%} (n={row['n']}), MACs {row['mac_ratio']:.1%}", flush=True)
                result = {"bench": "quant", "points": points, "versions": versions(), "loadavg": os.getloadavg()[0],
                          "settings": {"threads": SPEED_THREADS, "batch": SPEED_BATCH, "seq": SEQ, "iters": a.iters,
                                       "eval_limit": a.eval_limit, "method": a.method}}
                write_json(out_json, result)  # after every point: an interrupted run resumes here
    rows = [r for r in latest(points) if "error" not in r]
    if rows:
        plot(rows, os.path.join(RESULTS, f"{name}.png"),
             f"accuracy vs measured speedup ({a.method}, ORT CPU {SPEED_THREADS} threads, b{SPEED_BATCH}×{SEQ} text)")
    return result


if __name__ == "__main__":
    main()
