"""Latency re-tune: search the mask under a *measured* latency budget instead of a MAC budget.

1. A latency table of the backend at the deployment shape (profiling.latency_table: one block's
   attention by kept heads and FFN by kept neurons) gives per-unit costs in milliseconds; where
   block shapes differ across layers (Swin stages, windowed attention) there is one per shape.
2. The mask search (optin.search, unchanged) keeps the most important units whose predicted
   latency is at most dense / target.
3. The narrowed model is exported and measured against the dense one, interleaved. If the
   measured speedup falls short, the predicted budget is tightened by measured / target and the
   search runs again, for at most `rounds` rounds. Every round goes into the report.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from .errors import BadInput, InfeasibleBudget


@dataclass(frozen=True)
class LatencyTarget:
    speedup: float          # wanted speedup over dense on `backend` at batch × seq
    backend: str = "onnxruntime"
    batch: int = 8
    seq: int = 64
    rounds: int = 4
    iters: int = 100

    def check(self) -> None:
        if self.speedup <= 1.0:
            raise BadInput(f"--latency-target is a speedup over dense and must exceed 1, got {self.speedup}")
        if self.rounds < 1:
            raise BadInput("--retune-rounds must be at least 1")


def _measure(spec, dense_model, adapter_cls, tok, dense_dir, work, target: LatencyTarget, extra):
    """Narrow a copy to spec, save, export, profile against the exported dense model."""
    import copy

    from export.onnx import export_onnx
    from profiling.latency import ProfileConfig, profile

    from .io import save_pruned
    from .narrow import narrow

    model = copy.deepcopy(dense_model)
    narrow(adapter_cls(model), spec)
    d = tempfile.mkdtemp(prefix="round-", dir=work)
    save_pruned(model, tok, spec, d, extra=extra)
    export_onnx(d, log=lambda *_: None)
    rep = profile(d, ProfileConfig(backend=target.backend, batch=target.batch, seq=target.seq,
                                   iters=target.iters, warmup=10, against=dense_dir), log=lambda *_: None)
    return rep


def latency_search(scores, adapter, tok, source_path: str, target: LatencyTarget, extra: dict, align: int = 1,
                   log=print):
    """Returns (spec, info): info holds the target, whether it was met, the latency table and every
    round (goal, predicted and measured speedups, kept units, MAC ratio)."""
    from export.onnx import export_onnx
    from profiling.latency_table import block_table, latency_cost_model

    from .prune import cost_model_for
    from .search import search
    from .spec import PruneSpec

    target.check()
    if not adapter.has_attention:
        raise BadInput(f"--latency-target is not supported for {adapter.config.model_type} models yet (the latency "
                       "table times transformer blocks); use --flops")
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
    macs = cost_model_for(adapter, target.seq)
    full = (d.layer_heads, d.layer_ffn)
    rounds, specs = [], []
    goal = target.speedup
    # everything prunable removed, the rest stays (a fitted intercept ≤ 0 predicts no floor)
    ceiling = lat.total(*full) / lat.fixed if lat.fixed > 0 else float("inf")
    if goal > ceiling:
        raise InfeasibleBudget(f"latency target {goal:.2f}x is beyond what pruning heads and neurons can reach on "
                               f"{target.backend} at batch {target.batch} × seq {target.seq}: the latency table "
                               f"predicts at most {ceiling:.2f}x (block overheads stay); lower --latency-target")
    with tempfile.TemporaryDirectory(prefix="optin-retune-") as work:
        dense_dir = os.path.join(work, "dense")
        export_onnx(source_path, out_dir=dense_dir, data=extra.get("data"), log=lambda *_: None)
        for r in range(target.rounds):
            res = search(scores.heads, scores.neurons, lat, lat.total(*full) / goal, align)
            spec = PruneSpec.from_masks(adapter.config.model_type, res.head_mask, res.neuron_mask, dims=d)
            rep = _measure(spec, adapter.model, type(adapter), tok, dense_dir, work, target, extra)
            measured = rep["speedup"]["measured"]
            row = {"round": r + 1, "goal": goal, "predicted_speedup": lat.total(*full) / res.cost,
                   "measured_speedup": measured, "cv": rep["cv"], "dense_cv": rep["dense"]["cv"],
                   "mac_ratio": adapter.spec_macs(spec, target.seq) / macs.total(*full),
                   "kept_heads": spec.kept_heads, "kept_neurons": spec.kept_neurons}
            rounds.append(row)
            log(f"optin retune: round {r + 1}: goal {goal:.2f}x predicted {row['predicted_speedup']:.2f}x "
                f"measured {measured:.2f}x at {row['mac_ratio']:.1%} MACs")
            specs.append(spec)
            if measured >= target.speedup:
                break
            goal *= target.speedup / measured  # tighten by the shortfall and search again
            if goal >= ceiling:
                break  # nothing left to prune in the latency model: report the shortfall
    # the round that met the target (the last one), else the fastest one measured
    pick = max(range(len(rounds)), key=lambda i: rounds[i]["measured_speedup"])
    best = (specs[pick], rounds[pick]["measured_speedup"])
    return best[0], {"target": target.speedup, "met": best[1] >= target.speedup, "measured": best[1],
                     "table": table, "rounds": rounds}
