"""`optin run`: prune → export → engine → profile against dense → gate, in one folder, one report.

The folder is assembled under a temporary name and renamed only when every step finished, so a
failure leaves nothing half-written. With a latency target the mask is re-tuned against measured
latency (optin.retune) instead of the MAC budget alone, on the engine that will be deployed.
With --int8 / --fp16 the engine is quantised (or converted), scored on the test split, and timed
against the dense float32 model and against the dense model built the same way; the gate then
checks speed and, with --max-accuracy-drop, the engine's accuracy against dense.
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
    min_speedup: float | None = None  # gate threshold; default: the latency target less its tolerance
    latency_target: float | None = None
    retune_rounds: int = 6
    engine: object = None           # export.engines.EngineConfig (precision, INT8 settings, provider)
    max_accuracy_drop: float | None = None  # gate: engine accuracy vs dense, in points


def run(model: str, data: str, out: str, pcfg: PruneConfig = PruneConfig(), rcfg: RunConfig = RunConfig(),
        log=print) -> dict | None:
    from dataclasses import replace

    from export.engines import EngineConfig, build_engine, get_backend
    from export.onnx import export_onnx
    from profiling.gate import gate
    from profiling.latency import ProfileConfig, profile

    from .io import read_json, staged_dir, write_json
    from .prune import prune
    from .retune import LatencyTarget

    from . import devices, distributed

    distributed.init(devices.resolve(pcfg.device))  # NCCL when the ranks score on GPUs
    if not distributed.is_main():  # under torchrun the other ranks only help to score
        return prune(model, data, out, pcfg, log=log)
    t0 = time.time()
    steps = {}
    ecfg = rcfg.engine or EngineConfig()
    if pcfg.eval_limit and ecfg.eval_limit is None:
        ecfg = replace(ecfg, eval_limit=pcfg.eval_limit)
    with staged_dir(out) as tmp:
        target = None
        if rcfg.latency_target:
            target = LatencyTarget(rcfg.latency_target, rcfg.backend, rcfg.batch, rcfg.seq or 64,
                                   rcfg.retune_rounds, engine=ecfg)
            target.check()
        get_backend(rcfg.backend).available(ecfg)  # a refused precision fails before the pruning is spent
        steps["prune"] = prune(model, data, tmp, pcfg, latency=target, log=log)
        seq = rcfg.seq or steps["prune"]["macs"]["seq_len"]
        steps["export"] = export_onnx(tmp, log=log)
        steps["engine"] = build_engine(tmp, rcfg.backend, ecfg, log=log)
        steps["profile"] = profile(tmp, ProfileConfig(backend=rcfg.backend, batch=rcfg.batch, seq=seq,
                                                      iters=rcfg.iters, against=model, engine=ecfg), log=log)
        threshold = rcfg.min_speedup or (rcfg.latency_target * (1 - target.tol) if target else None)
        gated = threshold is not None or rcfg.max_accuracy_drop is not None
        steps["gate"] = gate(tmp, min_speedup=threshold, max_accuracy_drop=rcfg.max_accuracy_drop,
                             log=log) if gated else None
        prof = steps["profile"]
        same = prof.get("same_precision") or {}
        dense_q = read_json(os.path.join(tmp, same["dir"], "engine.json")) if same else None
        report = {"command": "run", "model": model, "data": data, "backend": rcfg.backend, "batch": rcfg.batch,
                  "seq": seq, "budget": pcfg.flops, "latency_target": rcfg.latency_target,
                  "precision": ecfg.precision, "accuracy": steps["prune"]["accuracy"],
                  "engine_accuracy": steps["engine"].get("accuracy"), "macs": steps["prune"]["macs"],
                  "kept": steps["prune"]["kept"], "parity": steps["export"]["parity"],
                  "engine_parity": steps["engine"].get("parity"), "quantization": steps["engine"].get("quantization"),
                  "speedup": prof.get("speedup"), "speedup_same_precision": same.get("speedup"),
                  "dense_precision_speedup": same.get("dense_speedup"),
                  "dense_engine_accuracy": (dense_q or {}).get("accuracy"),
                  "latency_ms": prof["latency_ms"],
                  "gate": None if steps["gate"] is None else {"passed": steps["gate"]["passed"],
                                                              "threshold": threshold,
                                                              "max_accuracy_drop": rcfg.max_accuracy_drop,
                                                              "reasons": steps["gate"]["reasons"]},
                  "retune": steps["prune"].get("retune"), "seconds": time.time() - t0,
                  "reports": ["report.json", "export.json", "engine.json", "profile.json"]
                  + (["gate.json", "gate.xml"] if gated else []),
                  "versions": read_json(os.path.join(tmp, "report.json"))["versions"]}
        write_json(os.path.join(tmp, "run.json"), report)
    log(summary(report))
    return report


def summary(r: dict) -> str:
    a, m, s = r["accuracy"], r["macs"], r["speedup"] or {}
    g, e = r["gate"], r.get("engine_accuracy") or {}
    text = (f"optin run: {r['model']} → {r['backend']} {r.get('precision', 'fp32')} b{r['batch']}×s{r['seq']}: "
            f"{a.get('metric', 'accuracy')} {a['dense']:.2%} → {a['pruned']:.2%}"
            + (f" (engine {e['engine']:.2%})" if e.get("available") else "")
            + f", MACs {m['ratio']:.1%} of dense, parity {r['parity']['max_abs_diff']:.1e}, "
            f"speedup {s.get('measured', float('nan')):.2f}x (MAC-implied {s.get('mac_implied', float('nan')):.2f}x)")
    if r.get("speedup_same_precision"):
        text += f", {r['speedup_same_precision']['measured']:.2f}x over dense {r['precision']}"
    if g is not None:
        text += f", gate {'PASS' if g['passed'] else 'FAIL'}"
        text += "" if g["threshold"] is None else f" at {g['threshold']:.2f}x"
        text += "" if g.get("max_accuracy_drop") is None else f", drop <= {g['max_accuracy_drop']:.2f} pt"
    return text
