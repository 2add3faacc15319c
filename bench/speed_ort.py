"""Measured ONNX Runtime CPU speedup of the pruned minilm-rt (60% of MACs) over the dense model.

Both models run interleaved in this one process (A B, B A, …) at batch 8 × 64 real tokens, so
a neighbour's load hits both alike; the ratio of medians is the result, compared with the
MAC-implied ratio. Then a few session variants (threads, spinning, graph optimisation level,
ORT's transformer-optimised graph) are measured the same way, with fewer iterations, to show
which settings the speedup depends on.

    python bench/speed_ort.py [--pruned runs/rt06] [--dense minilm-rt] [--iters 300] [--no-variants]

Writes bench/results/speed_ort.json and speed_ort.png (also DIR/profile.json, profile.png).
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from dataclasses import replace

from export.engines import EngineConfig
from optin.io import write_json
from profiling.latency import ProfileConfig, compare, open_pair, profile

HERE = os.path.dirname(os.path.abspath(__file__))
MAIN = EngineConfig(threads=2)   # the setting the headline number uses: 2 intra-op threads, no spinning, level all
VARIANTS = {
    "2 threads, spinning (ORT default)": replace(MAIN, spin=True),
    "2 threads, level basic": replace(MAIN, level="basic"),
    "2 threads, optimisations off": replace(MAIN, level="disable"),
    "2 threads, ORT transformer optimizer (model.opt.onnx)": replace(MAIN, onnx_file="model.opt.onnx"),
    "1 thread": replace(MAIN, threads=1),
}


def variant(pruned: str, dense: str, ecfg: EngineConfig, batch: int, seq: int, iters: int) -> dict:
    from export.samples import fixed_inputs

    if ecfg.onnx_file == "model.opt.onnx" and not os.path.exists(os.path.join(pruned, "model.opt.onnx")):
        from export.onnx import export_onnx

        export_onnx(pruned, optimize=True)
    pair = open_pair(pruned, ProfileConfig(batch=batch, seq=seq, iters=iters, against=dense, engine=ecfg))
    inputs, _ = fixed_inputs(pair.loaded, batch, seq)
    r = compare(pair.dense, pair.target, inputs, iters=iters, warmup=10)
    return {"speedup": r["speedup"], "dense_ms": r["a"]["latency_ms"]["median"],
            "pruned_ms": r["b"]["latency_ms"]["median"], "cv": [r["a"]["cv"], r["b"]["cv"]], "iters": iters}


def plot(result: dict, out: str) -> None:
    """Median latency of both models, and the speedup, for the headline setting and every variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    s, lat = result["speedup"], result["latency_ms"]
    rows = [("headline: 2 threads, no spinning, level all", lat["dense"]["median"], lat["pruned"]["median"],
             s["measured"])]
    rows += [(k, v["dense_ms"], v["pruned_ms"], v["speedup"]) for k, v in result["variants"].items()]
    y = np.arange(len(rows))
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 1.2 + 0.55 * len(rows)), sharey=True)
    ax0.barh(y - 0.2, [r[1] for r in rows], 0.4, label="dense", color="C1")
    ax0.barh(y + 0.2, [r[2] for r in rows], 0.4, label="pruned (60% MACs)", color="C0")
    ax0.set_yticks(y, [r[0] for r in rows], fontsize=8)
    ax0.invert_yaxis()
    ax0.set_xlabel("median latency (ms)")
    ax0.legend(fontsize=8)
    ax1.barh(y, [r[3] for r in rows], 0.6, color=["C0"] + ["C7"] * (len(rows) - 1))
    ax1.axvline(s["mac_implied"], color="C3", ls="--", label=f"MAC-implied {s['mac_implied']:.2f}x")
    ax1.axvline(1.5, color="k", ls=":", lw=0.8, label="target 1.5x")
    for i, r in enumerate(rows):
        ax1.text(0.03, i, f"{r[3]:.2f}x", va="center", color="white", fontsize=8, fontweight="bold")
    ax1.set_xlabel("speedup (median dense / median pruned, interleaved)")
    ax1.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2)
    fig.suptitle(f"ONNX Runtime CPU, batch {result['batch']} × seq {result['seq']}, {result['iters']} iterations "
                 f"(variants {next(iter(result['variants'].values()), {}).get('iters', '-')})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pruned", default="runs/rt06", help="pruned model folder (optin prune --flops 0.6)")
    ap.add_argument("--dense", default="minilm-rt", help="dense model: zoo name or folder")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--variant-iters", type=int, default=100)
    ap.add_argument("--no-variants", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args(argv)

    t0, load0 = time.time(), os.getloadavg()
    rep = profile(a.pruned, ProfileConfig(batch=a.batch, seq=a.seq, iters=a.iters, warmup=20, against=a.dense, engine=MAIN))
    result = {"bench": "speed_ort", "pruned": a.pruned, "dense": a.dense, "batch": a.batch, "seq": a.seq,
              "iters": a.iters, "session": rep["session"], "providers": rep["providers"],
              "speedup": rep["speedup"], "latency_ms": {"dense": rep["dense"]["latency_ms"], "pruned": rep["latency_ms"]},
              "cv": {"dense": rep["dense"]["cv"], "pruned": rep["cv"]}, "macs": rep["macs"],
              "warnings": rep["warnings"], "versions": rep["versions"], "variants": {}}
    if not a.no_variants:
        for name, ecfg in VARIANTS.items():
            result["variants"][name] = v = variant(a.pruned, a.dense, ecfg, a.batch, a.seq, a.variant_iters)
            print(f"  {name}: {v['speedup']:.2f}x (dense {v['dense_ms']:.1f} ms, pruned {v['pruned_ms']:.1f} ms)")
    # the machine is shared: say how loaded it was (1-minute load average, 2 cores here)
    result.update(seconds=time.time() - t0, loadavg={"start": load0[0], "end": os.getloadavg()[0]},
                  cpus=os.cpu_count())
    os.makedirs(a.out, exist_ok=True)
    write_json(os.path.join(a.out, "speed_ort.json"), result)
    if result["variants"]:
        plot(result, os.path.join(a.out, "speed_ort.png"))
    else:
        shutil.copyfile(os.path.join(a.pruned, "profile.png"), os.path.join(a.out, "speed_ort.png"))
    s = rep["speedup"]
    print(f"speed_ort: ONNX Runtime CPU, batch {a.batch} x seq {a.seq}, {a.iters} interleaved iterations: "
          f"median speedup {s['measured']:.2f}x (dense {rep['dense']['latency_ms']['median']:.1f} ms, pruned "
          f"{rep['latency_ms']['median']:.1f} ms); MAC-implied {s['mac_implied']:.2f}x; "
          f"efficiency {s['flop_efficiency']:.2f}")
    return result


if __name__ == "__main__":
    main()
