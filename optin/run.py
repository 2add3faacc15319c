"""`optin run`: prune → export → engine → profile against dense → gate, in one folder, one report.

The folder is assembled under a temporary name and renamed only when every step finished, so a
failure leaves nothing half-written. With a latency target the mask is re-tuned against measured
latency (optin.retune) instead of the MAC budget alone.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .prune import PruneConfig


@dataclass(frozen=True)
class RunConfig:
    backend: str = "onnxruntime"
    batch: int = 8
    seq: int | None = None          # default: the model's max_length
    iters: int = 200
    min_speedup: float | None = None  # gate threshold; default: the latency target if given
    latency_target: float | None = None
    retune_rounds: int = 4
    engine: object = None           # export.engines.EngineConfig


def run(model: str, data: str, out: str, pcfg: PruneConfig = PruneConfig(), rcfg: RunConfig = RunConfig(),
        log=print) -> dict | None:
    from export.engines import EngineConfig, build_engine
    from export.onnx import export_onnx
    from profiling.gate import gate
    from profiling.latency import ProfileConfig, profile

    from .io import read_json, staged_dir, write_json
    from .prune import prune
    from .retune import LatencyTarget

    from . import distributed

    distributed.init()
    if not distributed.is_main():  # under torchrun the other ranks only help to score
        return prune(model, data, out, pcfg, log=log)
    t0 = time.time()
    steps = {}
    with staged_dir(out) as tmp:
        target = None
        if rcfg.latency_target:
            target = LatencyTarget(rcfg.latency_target, rcfg.backend, rcfg.batch, rcfg.seq or 64,
                                   rcfg.retune_rounds)
            target.check()
        steps["prune"] = prune(model, data, tmp, pcfg, latency=target, log=log)
        seq = rcfg.seq or steps["prune"]["macs"]["seq_len"]
        steps["export"] = export_onnx(tmp, log=log)
        ecfg = rcfg.engine or EngineConfig()
        steps["engine"] = build_engine(tmp, rcfg.backend, ecfg, log=log)
        steps["profile"] = profile(tmp, ProfileConfig(backend=rcfg.backend, batch=rcfg.batch, seq=seq,
                                                      iters=rcfg.iters, against=model, engine=ecfg), log=log)
        threshold = rcfg.min_speedup or rcfg.latency_target
        steps["gate"] = gate(tmp, min_speedup=threshold, log=log) if threshold else None
        report = {"command": "run", "model": model, "data": data, "backend": rcfg.backend, "batch": rcfg.batch,
                  "seq": seq, "budget": pcfg.flops, "latency_target": rcfg.latency_target,
                  "accuracy": steps["prune"]["accuracy"], "macs": steps["prune"]["macs"],
                  "kept": steps["prune"]["kept"], "parity": steps["export"]["parity"],
                  "speedup": steps["profile"].get("speedup"), "latency_ms": steps["profile"]["latency_ms"],
                  "gate": None if steps["gate"] is None else {"passed": steps["gate"]["passed"],
                                                              "threshold": threshold},
                  "retune": steps["prune"].get("retune"), "seconds": time.time() - t0,
                  "reports": ["report.json", "export.json", "engine.json", "profile.json"]
                  + (["gate.json", "gate.xml"] if threshold else []),
                  "versions": read_json(os.path.join(tmp, "report.json"))["versions"]}
        write_json(os.path.join(tmp, "run.json"), report)
    log(summary(report))
    return report


def summary(r: dict) -> str:
    a, m, s = r["accuracy"], r["macs"], r["speedup"] or {}
    g = r["gate"]
    return (f"optin run: {r['model']} → {r['backend']} b{r['batch']}×s{r['seq']}: accuracy {a['dense']:.2%} → "
            f"{a['pruned']:.2%}, MACs {m['ratio']:.1%} of dense, parity {r['parity']['max_abs_diff']:.1e}, "
            f"speedup {s.get('measured', float('nan')):.2f}x (MAC-implied {s.get('mac_implied', float('nan')):.2f}x)"
            + ("" if g is None else f", gate {'PASS' if g['passed'] else 'FAIL'} at {g['threshold']:.2f}x"))
