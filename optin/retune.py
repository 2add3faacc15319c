"""Latency re-tune: search the mask under a *measured* latency target instead of a MAC budget.

1. A latency table of the backend at the deployment shape (profiling.latency_table: one block's
   attention by kept heads and FFN by kept neurons) gives per-unit costs in milliseconds; where
   block shapes differ across layers (Swin stages, windowed attention) there is one per shape.
2. The mask search (optin.search, unchanged) keeps the most important units whose predicted
   latency is at most dense / goal.
3. The narrowed model is exported (and, for INT8 / FP16, built into that engine: the target is
   met by the engine that will be deployed) and timed against the dense float32 model,
   interleaved. optin.bracket moves the goal both ways between rounds — tighter when short,
   looser when past the target, interpolating once both sides are measured — and stops within
   `tol` of the target when the measurement can resolve it; a point whose 95% interval
   straddles the band's edge is measured again (`repeats`). Every round goes into the report.
With INT8 / FP16 the dense model at that precision is timed once first: its speedup q over
float32 makes the first goal target / q instead of a guess the quantisation would overshoot.
At those precisions each round's model is also re-fit (`refit`, optin.reconstruct) before its
engine is built: which INT8 nodes stay in float depends on the weights, so a masks-only round
measured another engine than the one deployed (minilm-rt, --latency-target 2.0 --int8: the
chosen round measured 1.90x, the final re-fit engine 1.72x with 9 nodes in float, not fewer).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace

from .errors import BadInput, InfeasibleBudget


@dataclass(frozen=True)
class LatencyTarget:
    speedup: float          # wanted speedup over the dense float32 model on `backend` at batch × seq
    backend: str = "onnxruntime"
    batch: int = 8
    seq: int = 64
    rounds: int = 6         # measured rounds at most
    iters: int = 100        # interleaved iterations per measurement
    tol: float = 0.05       # stop within this fraction of the target
    repeats: int = 2        # extra measurements of a point the noise cannot place
    engine: object = None   # export.engines.EngineConfig: the precision the target is met at

    def check(self) -> None:
        if self.speedup <= 1.0:
            raise BadInput(f"--latency-target is a speedup over dense and must exceed 1, got {self.speedup}")
        if self.rounds < 1:
            raise BadInput("--retune-rounds must be at least 1")
        if not 0 < self.tol < 0.5:
            raise BadInput(f"the latency tolerance must be in (0, 0.5), got {self.tol}")


class _Bench:
    """The dense float32 runner, opened once, and the inputs every round is timed on."""

    def __init__(self, dense_dir: str, target: LatencyTarget, ecfg):
        from export.samples import fixed_inputs, load
        from profiling.latency import open_runner

        self.target, self.ecfg = target, ecfg
        loaded = load(dense_dir, log=_quiet)
        self.inputs, self.source = fixed_inputs(loaded, target.batch, target.seq)
        self.dense = open_runner(target.backend, dense_dir, replace(ecfg, int8=False, fp16=False), loaded, log=_quiet)

    def time(self, runner, times=None) -> dict:
        """Interleaved measurement against dense, pooled with earlier `times` (a, b lists of ms)."""
        import numpy as np

        from profiling.latency import compare, ratio_ci, stats

        c = compare(self.dense, runner, self.inputs, self.target.iters, warmup=10)
        a = (times or {}).get("a", []) + c["a"]["times_ms"]
        b = (times or {}).get("b", []) + c["b"]["times_ms"]
        n = self.target.batch
        return {"a": a, "b": b, "speedup": float(np.median(a) / np.median(b)), "ci95": ratio_ci(a, b),
                "cv": stats(np.asarray(b) / 1e3, n)["cv"], "dense_cv": stats(np.asarray(a) / 1e3, n)["cv"]}


def _quiet(*_):
    pass


def _engine(folder: str, target: LatencyTarget, ecfg) -> object:
    """The runner of folder's model as it will be deployed: its INT8 / FP16 (or TensorRT) engine
    built without the test-set check (the run's final engine gets that), else model.onnx."""
    from export.engines import build_engine
    from profiling.latency import open_runner

    if ecfg.precision != "fp32" or target.backend == "tensorrt":
        build_engine(folder, target.backend, replace(ecfg, eval=False), log=_quiet)
    return open_runner(target.backend, folder, ecfg, log=_quiet)


def _round_folder(spec, dense_model, adapter_cls, tok, work, extra, refit=None) -> str:
    import copy

    from export.onnx import export_onnx

    from .io import save_pruned
    from .narrow import narrow

    model = copy.deepcopy(dense_model)
    pruned = adapter_cls(model)
    narrow(pruned, spec)
    if refit is not None:  # the weights the final model will have (module doc)
        refit(adapter_cls(dense_model), pruned, spec)
    d = tempfile.mkdtemp(prefix="round-", dir=work)
    save_pruned(model, tok, spec, d, extra=extra)
    export_onnx(d, log=_quiet)
    return d


def _table(adapter, target: LatencyTarget, log):
    from profiling.latency_table import block_table, latency_cost_model

    d = adapter.dims()
    log(f"optin retune: latency table on {target.backend} at batch {target.batch} × seq {target.seq}")
    # one table per distinct block shape: one for a uniform model, one per stage for Swin
    n, keys = adapter.layer_tokens(target.seq), adapter.attention_keys()
    shapes = [(d.layer_hidden[i], d.layer_head_dim[i], d.layer_heads[i], d.layer_ffn[i], n[i], keys[i])
              for i in range(d.num_layers)]
    tables = {s: block_table(*s[:4], target.batch, s[4], keys=s[5]) for s in dict.fromkeys(shapes)}
    lat = latency_cost_model([tables[s] for s in shapes])
    table = next(iter(tables.values())) if len(tables) == 1 else [
        {"hidden": s[0], "head_dim": s[1], "heads": s[2], "ffn": s[3], "keys": s[5],
         "layers": [i for i, t in enumerate(shapes) if t == s], **t} for s, t in tables.items()]
    return lat, table


def latency_search(scores, adapter, tok, source_path: str, target: LatencyTarget, extra: dict, align: int = 1,
                   allocation: str = "global", refit=None, log=print):
    """Returns (spec, info): info holds the target, whether it was met (within tol), why the loop
    stopped, the latency table and every round (goal, predicted and measured speedups with their
    interval, kept units, MAC ratio, the reason for its goal).
    refit(dense_adapter, pruned_adapter, spec): applied to each round's narrowed model when the
    engine is not float32 (module doc); None: masks only."""
    from export.engines import EngineConfig
    from export.onnx import export_onnx

    from .bracket import Point, choose, next_goal
    from .search import search
    from .spec import PruneSpec

    target.check()
    if not adapter.has_attention:
        raise BadInput(f"--latency-target is not supported for {adapter.config.model_type} models yet (the latency "
                       "table times transformer blocks); use --flops")
    ecfg = target.engine or EngineConfig()
    if ecfg.precision == "fp32":
        refit = None  # float32 speed does not depend on the weights: masks only is the same engine
    d = adapter.dims()
    lat, table = _table(adapter, target, log)
    macs = adapter.cost_model(target.seq)
    full = (d.layer_heads, d.layer_ffn)
    # everything prunable removed, the rest stays (a fitted intercept ≤ 0 predicts no floor)
    ceiling = lat.total(*full) / lat.fixed if lat.fixed > 0 else float("inf")
    points, specs, rounds = [], [], []
    with tempfile.TemporaryDirectory(prefix="optin-retune-") as work:
        dense_dir = os.path.join(work, "dense")
        export_onnx(source_path, out_dir=dense_dir, data=extra.get("data"), log=_quiet)
        bench = _Bench(dense_dir, target, ecfg)
        q = 1.0
        if ecfg.precision != "fp32":  # what the precision alone gives, so the first goal aims right
            q = bench.time(_engine(dense_dir, target, ecfg))["speedup"]
            log(f"optin retune: dense {ecfg.precision} is {q:.2f}x the dense float32 model")
        first = target.speedup / q
        if first > ceiling:
            raise InfeasibleBudget(f"latency target {target.speedup:.2f}x is beyond what pruning heads and neurons can "
                                   f"reach on {target.backend} at batch {target.batch} × seq {target.seq}: the latency "
                                   f"table predicts at most {ceiling:.2f}x"
                                   + (f" on top of {ecfg.precision}'s {q:.2f}x" if q != 1.0 else "")
                                   + " (block overheads stay); lower --latency-target")
        stop = None
        for _ in range(3 * target.rounds):  # reused masks cost no measurement; this bounds the loop anyway
            step = next_goal(points, target.speedup, target.tol, floor=1.0, ceiling=ceiling)
            goal = max(1.0, first) if not points else step.goal
            if goal is None:
                stop = step.reason
                break
            if sum(not r.get("reused_round") for r in rounds) >= target.rounds:
                stop = f"all {target.rounds} measured rounds used (--retune-rounds)"
                break
            res = search(scores.heads, scores.neurons, lat, lat.total(*full) / goal, align, allocation)
            spec = PruneSpec.from_masks(adapter.config.model_type, res.head_mask, res.neuron_mask, dims=d)
            why = step.reason if points else ("first goal: the target" if q == 1.0 else
                                              f"first goal: target / dense {ecfg.precision}'s {q:.2f}x")
            row = {"round": len(rounds) + 1, "goal": goal, "why": why, "predicted_speedup": lat.total(*full) / res.cost,
                   "mac_ratio": adapter.spec_macs(spec, target.seq) / macs.total(*full),
                   "kept_heads": spec.kept_heads, "kept_neurons": spec.kept_neurons}
            same = next((i for i, s in enumerate(specs) if (s.heads, s.neurons) == (spec.heads, spec.neurons)), None)
            if same is not None:  # the search gave a mask already measured: its speed is known
                p = points[same]
                row |= {"measured_speedup": p.measured, "ci95": list(p.ci95), "reused_round": same + 1}
            else:
                p, m = _measure_point(bench, _round_folder(spec, adapter.model, type(adapter), tok, work, extra,
                                                           refit), goal, target, ecfg)
                row |= m
            row |= {"band": p.band(target.speedup, target.tol), "resolved": p.resolved(target.speedup, target.tol)}
            points.append(p)
            specs.append(spec)
            rounds.append(row)
            log(f"optin retune: round {row['round']}: goal {goal:.3f} predicted {row['predicted_speedup']:.2f}x "
                f"measured {p.measured:.2f}x [{p.ci95[0]:.2f}, {p.ci95[1]:.2f}] at {row['mac_ratio']:.1%} MACs ({row['band']})")
        else:
            stop = "loop bound reached (the search kept returning measured masks)"
    pick = choose(points, target.speedup, target.tol)
    chosen = points[pick]
    return specs[pick], {**_info(target, ecfg, q, chosen, rounds, pick, stop, table), "rounds_refit": refit is not None}


def _measure_point(bench, folder, goal, target, ecfg):
    from .bracket import Point

    runner = _engine(folder, target, ecfg)
    t = bench.time(runner)
    n = 1
    while not Point(goal, t["speedup"], tuple(t["ci95"])).resolved(target.speedup, target.tol) and n <= target.repeats:
        t = bench.time(runner, t)  # pooled: the interval narrows as √(iterations)
        n += 1
    p = Point(goal, t["speedup"], tuple(t["ci95"]))
    return p, {"measured_speedup": t["speedup"], "ci95": list(t["ci95"]), "cv": t["cv"], "dense_cv": t["dense_cv"],
               "measurements": n, "iters": len(t["b"])}


def _info(target, ecfg, q, chosen, rounds, pick, stop, table) -> dict:
    band = chosen.band(target.speedup, target.tol)
    resolved = chosen.resolved(target.speedup, target.tol)
    lo, hi = chosen.ci95
    if band == "within" and resolved:
        note = f"met: {chosen.measured:.2f}x is within {target.tol:.0%} of {target.speedup:.2f}x"
    elif band == "within":
        note = (f"{chosen.measured:.2f}x is within {target.tol:.0%} of {target.speedup:.2f}x, but its 95% interval "
                f"[{lo:.2f}, {hi:.2f}] also reaches outside: this machine's noise cannot resolve {target.tol:.0%}")
    else:
        note = f"not met: the nearest measured round gave {chosen.measured:.2f}x [{lo:.2f}, {hi:.2f}] ({band}); {stop}"
    return {"target": target.speedup, "tolerance": target.tol, "met": band == "within",
            "reached": chosen.measured >= target.speedup * (1 - target.tol), "resolved": resolved,
            "measured": chosen.measured, "ci95": [lo, hi], "chosen_round": pick + 1, "stop": stop, "note": note,
            "precision": ecfg.precision, "dense_precision_speedup": q, "backend": target.backend,
            "batch": target.batch, "seq": target.seq, "table": table, "rounds": rounds}
