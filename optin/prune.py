"""`optin prune`: model + calibration data + MAC budget → narrowed model folder + report.json.

adapter → importance → search → narrow → save, each step timed; dense and pruned accuracy on the
data's test split; MACs counted analytically and cross-checked with fvcore.
"""
from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass, field

import torch

from . import distributed
from .data import DataOptions
from .errors import BadData, BadInput
from .importance import ScoreConfig
from .reconstruct import ReconConfig

DEFAULT_MAX_LENGTH = 128


@dataclass(frozen=True)
class PruneConfig:
    flops: float = 0.6            # budget: fraction of dense MACs kept
    method: str = "optin-est"  # tied with exact "optin" on the dev sample, 3x+ faster (bench/estimator.py)
    seed: int = 0
    calib: int = 128              # calibration examples
    batch_size: int = 32
    max_length: int | None = None  # tokens; also the sequence length the MACs are counted at
    align: int | None = None      # neurons kept in multiples of this; None: the family's default_align
    bn_recalib: bool = True        # re-estimate BatchNorm statistics after narrowing (optin.recalibrate)
    reconstruct: bool = True       # re-fit the weights that read the kept units (optin.reconstruct)
    recon: ReconConfig = field(default_factory=ReconConfig)
    token_share: float = 0.0       # part of the MAC reduction taken by dropping tokens (ViT/DeiT; optin.tokens)
    eval_limit: int | None = None  # cap on test examples (None: the whole test split)
    fvcore: bool = True
    score: ScoreConfig = field(default_factory=ScoreConfig)
    data: DataOptions = field(default_factory=DataOptions)  # --calib-data, columns, --label-map

    def check(self) -> None:
        if not 0 < self.flops <= 1:
            raise BadInput(f"--flops must be in (0, 1] (fraction of dense MACs kept), got {self.flops}")
        if self.calib < 1 or self.batch_size < 1:
            raise BadInput("--calib and --batch-size must be positive")
        if not 0 <= self.token_share <= 1:
            raise BadInput(f"--token-share must be in [0, 1] (part of the MAC reduction taken by tokens), "
                           f"got {self.token_share}")
        if self.max_length is not None and self.max_length < 2:
            raise BadInput(f"--max-length must be at least 2, got {self.max_length}")
        self.recon.check()


def _model_max_length(path: str) -> int:
    zoo = os.path.join(path, "optin_zoo.json")
    if os.path.exists(zoo):
        return int(json.load(open(zoo))["max_length"])
    return DEFAULT_MAX_LENGTH


def cost_model_for(adapter, seq_len: int, tokens=None):
    """MACs per example (the family's Adapter.cost_model); tokens: tokens entering each block when
    some were dropped (spec.kept_tokens)."""
    return adapter.cost_model(seq_len, tokens)


def dense_model_macs(adapter, seq_len: int) -> int:
    """Exact MACs per example of the dense model: every unit each layer has."""
    from .spec import PruneSpec

    d = adapter.dims()
    return adapter.spec_macs(PruneSpec.from_masks(adapter.config.model_type, *[m.float() for m in d.present()],
                                                  dims=d), seq_len)


def _token_step(adapter, batches, cfg: PruneConfig, seq: int, dense_macs: int):
    """Score token positions (every rank; optin.tokens) and, on rank 0, plan the schedule."""
    from .tokens import token_scores

    t = time.time()
    scores, _ = token_scores(adapter, batches, cfg.score)
    if not distributed.is_main():
        return None, None
    kept, info = token_plan(adapter, scores, seq, dense_macs, cfg.flops, cfg.token_share)
    return kept, {**info, "scoring_s": time.time() - t}


def token_plan(adapter, scores, seq: int, dense_macs: int, flops: float, share: float):
    """The token schedule that takes `share` of the MAC reduction (1 − flops) at dense head and
    neuron widths. Returns (kept positions per block, what the report records)."""
    from .tokens import schedule

    d = adapter.dims()

    def macs(counts):
        return cost_model_for(adapter, seq, counts).total(d.layer_heads, d.layer_ffn)

    kept = schedule(scores, adapter.special_tokens, macs, dense_macs * (1 - share * (1 - flops)))
    counts = [len(k) for k in kept]
    return kept, {"share": share, "dense": adapter.seq_len(seq), "kept": counts,
                  "mac_ratio_tokens_only": macs(counts) / dense_macs}


def fvcore_count(model, seq_len: int, ops=None, both: bool = False):
    """fvcore on an eager-attention copy, batch 1, all tokens real; both: (total, matmul/conv ops)."""
    from profiling.macs import fvcore_macs

    from .adapters import adapter_for

    m = copy.deepcopy(model).eval()
    m.set_attn_implementation("eager")
    inputs = adapter_for(m).random_inputs(1, seq_len, torch.Generator().manual_seed(0))
    names = list(inputs)

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(**dict(zip(names, args))).logits

    return fvcore_macs(Logits(m), tuple(inputs.values()), ops, both)


@dataclass
class Prepared:
    path: str
    model: torch.nn.Module
    tok: object
    adapter: object
    seq: int
    calib: list
    test: list
    data: object
    recon: list | None = None

    def __iter__(self):  # the tuple callers unpack: path, model, tok, adapter, seq, calib, test, data
        return iter((self.path, self.model, self.tok, self.adapter, self.seq, self.calib, self.test, self.data))


def prepare(model_spec: str, data_spec: str, cfg: PruneConfig, log=print) -> Prepared:
    """Load model, processor (tokenizer), adapter and encoded calibration/test batches."""
    from .adapters import adapter_for
    from .data import make_batches, model_examples
    from .io import load_model
    from .zoo import resolve_model

    path = resolve_model(model_spec, log=log)
    model, tok = load_model(path)
    adapter = adapter_for(model)
    max_len = adapter.seq_len(cfg.max_length or _model_max_length(path))
    ds, calib_all, test = model_examples(data_spec, cfg.data, model.config, adapter.modality, cfg.calib, cfg.seed,
                                         log)
    calib = calib_all[:cfg.calib]
    if cfg.eval_limit:
        test = test[:cfg.eval_limit]
    if not calib:
        raise BadData(f"{ds.name}: no calibration examples")
    calib_b = make_batches(tok, calib, cfg.batch_size, max_len)
    test_b = make_batches(tok, test, 64, max_len)
    # the re-fit has its own count from the same split (its first examples are the scoring ones)
    recon_b = make_batches(tok, calib_all[:cfg.recon.calib], cfg.batch_size, max_len) if cfg.reconstruct else None
    return Prepared(path, model, tok, adapter, max_len, calib_b, test_b, ds, recon_b)


def prune(model_spec: str, data_spec: str, out: str, cfg: PruneConfig = PruneConfig(), latency=None,
          log=print) -> dict | None:
    """latency: an optin.retune.LatencyTarget; then the mask is searched under measured latency
    (the MAC budget is not used, and the report gives the MAC ratio reached). Under torchrun,
    ranks other than 0 return None after scoring."""
    from .evaluate import accuracy
    from .importance import get_method
    from .io import save_pruned, staged_dir, write_json
    from .narrow import narrow
    from .plots import kept_widths, recon_errors
    from .report import versions
    from .search import search
    from .spec import PruneSpec

    cfg.check()
    method = get_method(cfg.method)
    distributed.init()  # scoring is shared out when launched by torchrun; rank 0 does the rest
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    prep = prepare(model_spec, data_spec, cfg, log)
    path, model, tok, adapter, seq, calib_b, test_b, ds = prep
    if cfg.token_share:  # refused before any scoring is spent
        if latency is not None:
            raise BadInput("--token-share cannot be combined with --latency-target yet; drop one of them")
        if not adapter.token_reduction:
            raise BadInput(f"--token-share applies to ViT/DeiT image classifiers whose head reads [CLS] (timm ViT: "
                           f"global_pool 'token'), not this {adapter.config.model_type} model; drop --token-share")
    dims = adapter.dims()
    costs = cost_model_for(adapter, seq)
    dense_macs = dense_model_macs(adapter, seq)

    acc_dense = accuracy(model, test_b, "dense accuracy") if distributed.is_main() else None
    t1 = time.time()
    scores = method(adapter, calib_b, cfg.score)
    kept_tokens, token_info = _token_step(adapter, calib_b, cfg, seq, dense_macs) if cfg.token_share else (None, None)
    t2 = time.time()
    if not distributed.is_main():
        distributed.finish()
        return None
    extra = {"seq_len": seq, "max_length": seq, "source": path, "data": data_spec}
    retune = None
    c_type = model.config.model_type
    align = adapter.default_align if cfg.align is None else cfg.align
    if latency is None:
        if kept_tokens is not None:  # heads and neurons are costed at the reduced token counts
            costs = cost_model_for(adapter, seq, [len(k) for k in kept_tokens])
        res = search(scores.heads, scores.neurons, costs, cfg.flops * dense_macs, align)
        spec = PruneSpec.from_masks(c_type, res.head_mask, res.neuron_mask, kept_tokens, dims=dims)
    else:
        from .retune import latency_search

        spec, retune = latency_search(scores, adapter, tok, path, latency, extra, align, log=log)
    t3 = time.time()
    fv_dense = fvcore_count(model, seq, both=True) if cfg.fvcore else None  # before narrowing, on a copy
    dense = adapter_like(adapter, copy.deepcopy(model)) if cfg.reconstruct else None
    if cfg.reconstruct and cfg.recon.reselect and adapter.has_attention:
        spec, recon = _reselect(dense, adapter, prep.recon, spec, cfg, test_b)  # narrows block by block
        bn = None  # transformers: no BatchNorm
    else:
        narrow(adapter, spec)
        bn = _recalibrate(adapter, calib_b, test_b) if cfg.bn_recalib else None
        recon = _reconstruct(dense, adapter, prep.recon, spec, cfg, test_b) if cfg.reconstruct else None
    del dense
    pruned_macs = adapter.spec_macs(spec, seq)  # exact, also where the search's cost model is linearised
    acc_pruned = accuracy(model, test_b, "pruned accuracy")

    macs = {"dense": dense_macs, "pruned": pruned_macs, "ratio": pruned_macs / dense_macs, "seq_len": seq,
            "unit": "MACs per example (1 MAC = 1 multiply-add = 2 FLOPs)"}
    if cfg.fvcore:
        # fvcore's total, and its matmul/linear/conv operators alone (what the analytic count models)
        fv_pruned = fvcore_count(model, seq, both=True)
        macs.update(fvcore_dense=fv_dense[0], fvcore_pruned=fv_pruned[0],
                    fvcore_matmul_dense=fv_dense[1], fvcore_matmul_pruned=fv_pruned[1])
    t4 = time.time()
    report = {
        "command": "prune", "model": model_spec, "model_path": path, "model_type": c_type, "data": data_spec,
        "method": cfg.method, "budget": None if latency else cfg.flops, "align": align, "macs": macs,
        "accuracy": {"dense": acc_dense["accuracy"], "pruned": acc_pruned["accuracy"],
                     "dense_ci95": acc_dense["ci95"], "pruned_ci95": acc_pruned["ci95"], "test_examples": acc_dense["n"]},
        "kept": {"heads": spec.kept_heads, "neurons": spec.kept_neurons,
                 "dense_heads": dims.num_heads if dims.uniform else list(dims.layer_heads),
                 "dense_neurons": dims.ffn_size if dims.uniform else list(dims.layer_ffn),
                 "tokens": adapter.layer_tokens(seq) if spec.tokens is None else spec.kept_tokens(seq),
                 "dense_tokens": seq},
        "tokens": token_info,
        "bn_recalibration": bn,
        "reconstruction": recon,
        "seconds": {"scoring": t2 - t1, "search": t3 - t2,
                    "reconstruction": recon["seconds"] if recon else 0.0, "total": t4 - t0},
        "seed": cfg.seed, "config": _config_dict(cfg), "calibration_examples": sum(len(b["labels"]) for b in calib_b),
        "scoring": {**{k: v for k, v in scores.meta.items() if k != "raw"}, "processes": distributed.world()},
        "retune": retune,
        "versions": versions(),
    }
    with staged_dir(out) as tmp:
        save_pruned(model, tok, spec, tmp, extra=extra)
        kept_widths(spec, os.path.join(tmp, "kept_widths.png"),
                    f"{model_spec} @ {macs['ratio']:.2f} MACs ({cfg.method}): kept units per layer", seq)
        if recon:
            recon_errors(recon, os.path.join(tmp, "reconstruction.png"),
                         f"{model_spec} @ {macs['ratio']:.2f} MACs: calibration error per sublayer")
        write_json(os.path.join(tmp, "report.json"), report)
    distributed.finish()
    log(summary(report))
    return report


def _recalibrate(adapter, calib_b, test_b) -> dict | None:
    """BatchNorm statistics of the narrowed model re-estimated on the calibration batches
    (optin.recalibrate); the accuracy before stays in the report so the effect of this step is
    visible. None when the model has no BatchNorm."""
    from .evaluate import accuracy
    from .recalibrate import batchnorms, recalibrate_batchnorm

    if not batchnorms(adapter.model):
        return None
    before = accuracy(adapter.model, test_b, "pruned accuracy before BatchNorm recalibration")
    n = recalibrate_batchnorm(adapter.model, calib_b, adapter.input_names())
    return {"layers": n, "examples": sum(len(b["labels"]) for b in calib_b), "accuracy_before": before["accuracy"]}


def adapter_like(adapter, model):
    """An adapter of the same family over another model object (the dense copy)."""
    return type(adapter)(model)


def _reconstruct(dense, adapter, batches, spec, cfg: PruneConfig, test_b) -> dict:
    """The re-fit (optin.reconstruct) with the accuracy before it, so the step's effect is visible."""
    from .evaluate import accuracy
    from .reconstruct import reconstruct

    before = accuracy(adapter.model, test_b, "pruned accuracy before reconstruction")
    rep = reconstruct(dense, adapter, batches, spec, cfg.recon)
    return {**rep, "accuracy_before": before["accuracy"]}


def _reselect(dense, adapter, batches, spec, cfg: PruneConfig, test_b):
    """The re-fit with each block's units re-chosen on the way up (optin.reselect): the search's
    counts, the units that leave the least error after the re-fit. The accuracy before is the
    search's own choice, narrowed without a re-fit. Returns (the spec kept, the report)."""
    from .evaluate import accuracy
    from .narrow import narrow, narrow_tokens
    from .reconstruct import reconstruct
    from .reselect import Reselect

    plain = adapter_like(adapter, copy.deepcopy(adapter.model))
    narrow(plain, spec)
    before = accuracy(plain.model, test_b, "pruned accuracy before reconstruction")
    del plain
    narrow_tokens(adapter, spec)
    sel = Reselect(adapter, spec, cfg.recon.damp)
    rep = reconstruct(dense, adapter, batches, spec, cfg.recon, select=sel)
    adapter.model.config.optin_pruned = True
    kept = sel.spec()
    changed = sum(len(set(a) ^ set(b)) // 2 for a, b in zip(spec.heads + spec.neurons, kept.heads + kept.neurons))
    return kept, {**rep, "accuracy_before": before["accuracy"], "reselected_units": changed}


def _config_dict(cfg: PruneConfig) -> dict:
    d = asdict(cfg)
    d["score"] = asdict(cfg.score)
    d["recon"] = asdict(cfg.recon)
    return d


def summary(r: dict) -> str:
    a, m = r["accuracy"], r["macs"]
    goal = f"{r['budget']:.2f}" if r["budget"] else f"{r['retune']['target']:.2f}x latency"
    return (f"optin prune: {r['model']} {r['method']} @ {goal}: "
            f"MACs {m['dense'] / 1e6:.1f}M → {m['pruned'] / 1e6:.1f}M ({m['ratio']:.1%}, seq {m['seq_len']}); "
            f"accuracy {a['dense']:.2%} → {a['pruned']:.2%} (±{a['pruned_ci95']:.1%}, n={a['test_examples']}); "
            f"heads {r['kept']['heads']} neurons {r['kept']['neurons']}"
            + (f" tokens {r['kept']['tokens']}" if r.get("tokens") else "") + f"; {r['seconds']['total']:.0f} s")
