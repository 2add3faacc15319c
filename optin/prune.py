"""Pruning a model: `prune_model` (a model object and calibration batches in, the narrowed model,
its spec and report out, nothing written) and `prune` (`optin prune`: a model and data spec in,
a folder out), which is a thin shell over it.

adapter → importance → search → narrow → (BatchNorm re-estimation) → re-fit (optin.steps), each
step timed; dense and pruned accuracy on evaluation data; MACs counted analytically and
cross-checked with fvcore.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, field

import torch

from . import devices, distributed, steps
from .data import DataOptions
from .errors import BadData, BadInput
from .importance import ScoreConfig
from .prepare import DEFAULT_MAX_LENGTH, Prepared, prepare  # noqa: F401  (prepare: callers import it from here)
from .reconstruct import ReconConfig
from .search import check_allocation


SELECTIONS = ("auto", "one-shot", "refit-split", "iterative", "iterative-units")
# `--select auto` (the default) asks the re-fit which head/neuron split to keep (refit-split) at budgets
# up to this fraction of MACs, and takes the search's split (one-shot) above it. Chosen on dev
# (bench/README.md, "`--select auto`"): the split moved vit-fmnist by +1.95 / +0.40 points at 0.2 / 0.3
# and minilm-rt by 0.00 / +0.10, vit-fmnist by -0.15 and minilm-rt by -0.20 at 0.4; from 0.5 up
# vit-fmnist's one-shot masks are within 0.15 points of dense (nothing left for a split to recover).
SPLIT_AT_OR_BELOW = 0.3
ONE_SEARCH = ("auto", "one-shot")  # the modes that work with a token schedule and the latency re-tune


@dataclass(frozen=True)
class PruneConfig:
    flops: float = 0.6            # budget: fraction of dense MACs kept
    # tied with exact "optin" on the dev sample, 3x+ faster (bench/estimator.py); optin-fast, cheaper
    # still, emptied mpnet-rt's last attention layer at 0.3 (bench/README.md, "The default scorer")
    method: str = "optin-est"
    seed: int = 0
    calib: int = 128              # calibration examples
    batch_size: int = 32
    max_length: int | None = None  # tokens; also the sequence length the MACs are counted at
    align: int | None = None      # neurons kept in multiples of this; None: the family's default_align
    allocation: str | None = None  # global | even (optin.search); None: the family's default_allocation
    select: str = "auto"           # auto | one-shot | refit-split (optin.refit_split) | iterative | iterative-units (optin.iterative)
    bn_recalib: bool = True        # re-estimate BatchNorm statistics after narrowing (optin.recalibrate)
    reconstruct: bool = True       # re-fit the weights that read the kept units (optin.reconstruct)
    recon: ReconConfig = field(default_factory=ReconConfig)
    token_share: float = 0.0       # part of the MAC reduction taken by dropping tokens (ViT/DeiT; optin.tokens)
    eval_limit: int | None = None  # cap on test examples (None: the whole test split)
    fvcore: bool = True
    score: ScoreConfig = field(default_factory=ScoreConfig)
    data: DataOptions = field(default_factory=DataOptions)  # --calib-data, columns, --label-map
    device: str | None = None      # auto, cpu, cuda[:N]; None: where the model is (optin.devices; the CLI: auto)
    dtype: str = "float32"         # scoring and evaluation passes: float32, bfloat16, float16 (optin.devices)

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
        if self.select not in SELECTIONS:
            raise BadInput(f"unknown --select {self.select!r}; choose one of: {', '.join(SELECTIONS)}")
        if self.select == "refit-split" and not self.reconstruct:
            raise BadInput("--select refit-split chooses by the re-fit model; drop --no-reconstruct or use --select one-shot")
        if self.select not in ONE_SEARCH and self.token_share:
            raise BadInput(f"--select {self.select} cannot be combined with --token-share yet; drop one of them")
        if self.allocation is not None:  # before any scoring is spent
            check_allocation(self.allocation)
        devices.dtype_of(self.dtype)

    def selection(self) -> str:
        """The selection mode that runs: --select, with auto resolved (refit-split at budgets up to
        SPLIT_AT_OR_BELOW when the re-fit is on and no tokens are dropped, else one-shot)."""
        if self.select != "auto":
            return self.select
        split = self.reconstruct and not self.token_share and self.flops <= SPLIT_AT_OR_BELOW + 1e-9
        return "refit-split" if split else "one-shot"


def allocation(adapter, cfg: PruneConfig) -> str:
    """--allocation, else the family's default (optin.search)."""
    return cfg.allocation or adapter.default_allocation


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
    with devices.autocast(devices.model_device(adapter.model), cfg.dtype):
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
    inputs = {k: v.to(devices.model_device(m)) for k, v in inputs.items()}
    names = list(inputs)

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(**dict(zip(names, args))).logits

    return fvcore_macs(Logits(m), tuple(inputs.values()), ops, both)


@dataclass
class PruneResult:
    """What `prune_model` returns: the narrowed (and re-fit) model, its spec and its report;
    nothing is written until `save`."""

    model: torch.nn.Module
    spec: object                  # optin.spec.PruneSpec
    report: dict
    processor: object = None      # the tokenizer / image processor saved beside the weights
    extra: dict = field(default_factory=dict)  # optin.json: seq_len, source, data (what export/profile read)
    saved_to: str | None = None   # the folder `save` wrote

    def save(self, out_dir: str) -> str:
        """The pruned folder (weights, spec.json, config.json that plain transformers loads with
        trust_remote_code, processor, report.json, plots), written all or nothing."""
        from .io import save_pruned, staged_dir, write_json
        from .plots import kept_widths, recon_errors

        r, seq = self.report, self.report["macs"]["seq_len"]
        what = f"{r['model']} @ {r['macs']['ratio']:.2f} MACs"
        with staged_dir(out_dir) as tmp:
            save_pruned(self.model, self.processor, self.spec, tmp, extra=self.extra)
            kept_widths(self.spec, os.path.join(tmp, "kept_widths.png"), f"{what} ({r['method']}): kept units per layer",
                        seq)
            if r.get("reconstruction"):
                recon_errors(r["reconstruction"], os.path.join(tmp, "reconstruction.png"),
                             f"{what}: calibration error per sublayer")
            write_json(os.path.join(tmp, "report.json"), r)
        self.saved_to = out_dir
        return out_dir


def _oom_fix(args, kwargs, step) -> str:
    """What lowers the memory of the step that ran out (optin.devices.out_of_memory)."""
    cfg = kwargs.get("config") or kwargs.get("cfg") or next((a for a in args if isinstance(a, PruneConfig)), None) \
        or PruneConfig()
    if step == "the re-fit":  # it keeps every re-fit example's hidden states on the device
        return f"lower --recon-calib (now {cfg.recon.calib}) or --batch-size (now {cfg.batch_size}), or use --device cpu"
    if step == "evaluation":
        return "use --dtype bfloat16, --eval-limit N, or --device cpu"
    return f"lower --batch-size (now {cfg.batch_size}) or use --dtype bfloat16, or --device cpu"


def _place(model, cfg: PruneConfig, scoring: bool) -> torch.device:
    """Resolve cfg.device, check cfg.dtype against it (and the method, when it will score), move the model."""
    from .importance import get_method

    dev = devices.resolve(cfg.device, model)
    devices.check_dtype(dev, cfg.dtype, scoring and get_method(cfg.method).uses_gradients, f"--method {cfg.method}")
    model.to(dev)
    return dev


def _evaluator(test_b, dev: torch.device, dtype: str, task):
    """model, desc → the task's metric (optin.tasks: accuracy, or mIoU) on the evaluation batches,
    under the scoring dtype (optin.devices)."""
    def evaluate(m, desc):
        with devices.autocast(dev, dtype):
            return task.evaluate(m, test_b, desc)
    return evaluate


@devices.out_of_memory(_oom_fix)
def prune_model(model, calib, flops: float | None = None, method: str | None = None, *,
                reconstruct: bool | None = None, processor=None, eval_data=None, config: PruneConfig | None = None,
                recon_data=None, scores=None, spec=None, device: str | None = None,
                log=print) -> PruneResult | None:
    """Prune a transformers / timm classifier object in memory: score → search → narrow → (BatchNorm
    re-estimation) → re-fit. The model is changed in place and returned in the result.

    calib: batches (dicts of tensors), a `datasets.Dataset` or a list of examples (optin.calibration);
    the first `config.calib` examples score the units, the first `config.recon.calib` are re-fit on
    (or `recon_data`). eval_data: optional, the same forms; the report then has dense and pruned
    accuracy. flops / method / reconstruct / device override `config`'s; device "auto", "cpu",
    "cuda[:N]" (None: where the model is) holds the model and batches for every step, and the model
    is left there. scores / spec: precomputed (the latency re-tune chooses its own spec). Under
    torchrun, ranks other than 0 return None after scoring."""
    from dataclasses import replace

    from .adapters import adapter_for
    from .calibration import as_batches, examples_in, take
    from .importance import get_method
    from .narrow import narrow
    from .iterative import select_masks
    from .report import versions
    from .spec import PruneSpec

    cfg = config or PruneConfig()
    cfg = replace(cfg, **{k: v for k, v in (("flops", flops), ("method", method), ("reconstruct", reconstruct),
                                            ("device", device)) if v is not None})
    cfg.check()
    dev = _place(model, cfg, spec is None and scores is None)
    distributed.init(dev)  # scoring is shared out when launched by torchrun; rank 0 does the rest
    mode = cfg.selection() if spec is None else None  # None: the masks were given (a spec, the re-tune's)
    if mode in ("iterative", "iterative-units") and distributed.world() > 1:
        raise BadInput(f"--select {mode} re-scores on rank 0 alone; run it without torchrun")
    t0 = time.time()
    model.eval()
    adapter = adapter_for(model)
    seq = adapter.seq_len(cfg.max_length or _longest(calib) or _default_length(model, processor))
    if cfg.token_share and not adapter.token_reduction:  # refused before any scoring is spent
        raise BadInput(f"--token-share applies to ViT/DeiT image classifiers whose head reads [CLS] (timm ViT: "
                       f"global_pool 'token'), not this {adapter.config.model_type} model; drop --token-share")
    batches = as_batches(calib, adapter, processor, cfg.batch_size, seq, cfg.data)
    calib_b = devices.move(take(batches, cfg.calib), dev)
    if not calib_b:
        raise BadData("no calibration examples")
    recon_b = None
    if cfg.reconstruct:
        recon_b = _recon_batches(recon_data, batches, adapter, processor, cfg, seq, dev)
    # evaluation batches stay where they are: optin.evaluate moves one at a time
    test_b = as_batches(eval_data, adapter, processor, 64, seq, cfg.data, "evaluation data") if eval_data else None
    # the family's task metric (optin.tasks): accuracy, or mIoU for a segmenter
    evaluate = _evaluator(test_b, dev, cfg.dtype, adapter.task) if test_b else None

    dims = adapter.dims()
    dense_macs = dense_model_macs(adapter, seq)
    acc_dense = evaluate(model, f"dense {adapter.task.metric}") if evaluate and distributed.is_main() else None
    t1 = time.time()
    kept_tokens, token_info = None, None
    if spec is None:
        scores = scores or _score(get_method(cfg.method), adapter, calib_b, cfg)
        if cfg.token_share:
            kept_tokens, token_info = _token_step(adapter, calib_b, cfg, seq, dense_macs)
    t2 = time.time()
    if not distributed.is_main():
        distributed.finish()
        return None
    align = adapter.default_align if cfg.align is None else cfg.align
    c_type = model.config.model_type
    rounds = None  # what iterative selection did, round by round (optin.iterative)
    if spec is None:
        costs = cost_model_for(adapter, seq, None if kept_tokens is None else [len(k) for k in kept_tokens])
        hm, nm, rounds = select_masks(mode, adapter, scores,
                                      lambda a: _score(get_method(cfg.method), a, calib_b, cfg), costs,
                                      cfg.flops * dense_macs, align, allocation(adapter, cfg), recon_b, cfg.recon)
        spec = PruneSpec.from_masks(c_type, hm, nm, kept_tokens, dims=dims)
    t3 = time.time()
    fv_dense = fvcore_count(model, seq, both=True) if cfg.fvcore else None  # before narrowing, on a copy
    dense = type(adapter)(copy.deepcopy(model)) if cfg.reconstruct else None
    narrow(adapter, spec)
    model.to(dev)  # what narrowing made on the CPU (a stand-in's fresh bias, token-index buffers)
    bn = steps.recalibrate(adapter, calib_b, evaluate) if cfg.bn_recalib else None
    recon = steps.refit(dense, adapter, recon_b, spec, cfg.recon, evaluate) if cfg.reconstruct else None
    del dense
    pruned_macs = adapter.spec_macs(spec, seq)  # exact, also where the search's cost model is linearised
    acc_pruned = evaluate(model, f"pruned {adapter.task.metric}") if evaluate else None

    macs = {"dense": dense_macs, "pruned": pruned_macs, "ratio": pruned_macs / dense_macs, "seq_len": seq,
            "unit": "MACs per example (1 MAC = 1 multiply-add = 2 FLOPs)"}
    if cfg.fvcore:
        # fvcore's total, and its matmul/linear/conv operators alone (what the analytic count models)
        fv_pruned = fvcore_count(model, seq, both=True)
        macs.update(fvcore_dense=fv_dense[0], fvcore_pruned=fv_pruned[0],
                    fvcore_matmul_dense=fv_dense[1], fvcore_matmul_pruned=fv_pruned[1])
    t4 = time.time()
    report = {
        "command": "prune", "model": type(model).__name__, "model_path": None, "model_type": c_type, "data": None,
        "method": cfg.method, "budget": cfg.flops, "align": align, "allocation": allocation(adapter, cfg),
        "selection": {"mode": mode, "asked": cfg.select, "rounds": rounds}, "macs": macs,
        "accuracy": None if acc_pruned is None else {
            "dense": acc_dense["accuracy"], "pruned": acc_pruned["accuracy"], "dense_ci95": acc_dense["ci95"],
            "pruned_ci95": acc_pruned["ci95"], "test_examples": acc_dense["n"], "metric": adapter.task.metric,
            **_task_details(acc_dense, acc_pruned)},
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
        "seed": cfg.seed, "config": _config_dict(cfg), "calibration_examples": examples_in(calib_b),
        "scoring": None if scores is None else {**{k: v for k, v in scores.meta.items() if k != "raw"},
                                                "processes": distributed.world()},
        "retune": None,
        # where it ran, read off the model's weights after the last step (not what was asked)
        "device": {**devices.describe(devices.model_device(model)), "requested": cfg.device},
        "dtype": {"scoring_and_evaluation": cfg.dtype,
                  "weights": str(next(model.parameters()).dtype).replace("torch.", "")},
        "versions": versions(),
    }
    distributed.finish()
    return PruneResult(model, spec, report, processor, {"seq_len": seq, "max_length": seq})


def _task_details(dense: dict, pruned: dict) -> dict:
    """What a task's metric reports beyond its headline number (a segmenter's pixel accuracy and
    per-class IoU), dense and pruned; nothing for a classifier."""
    extra = [k for k in dense if k not in ("accuracy", "ci95", "n", "metric")]
    return {"details": {"dense": {k: dense[k] for k in extra}, "pruned": {k: pruned[k] for k in extra}}} if extra else {}


def _longest(calib) -> int | None:
    """Tokens per example of ready batches (the MACs are counted at it); None for other forms."""
    from .calibration import is_batches

    if isinstance(calib, (list, tuple)) and is_batches(calib) and "input_ids" in calib[0]:
        return max(int(b["input_ids"].shape[1]) for b in calib)
    return None


def _default_length(model, processor) -> int:
    """Tokens MACs are counted at when neither --max-length nor ready batches say: 128, or less
    where the model or its tokenizer cannot take that many."""
    limits = [DEFAULT_MAX_LENGTH, getattr(model.config, "max_position_embeddings", None),
              getattr(processor, "model_max_length", None)]
    return min(int(v) for v in limits if isinstance(v, int) and v > 1)


def _score(method, adapter, batches, cfg: PruneConfig):
    try:
        with devices.autocast(devices.model_device(adapter.model), cfg.dtype):
            return method(adapter, batches, cfg.score)
    except KeyError as e:
        if e.args == ("labels",):
            raise BadData(f"--method {cfg.method} needs labelled calibration data (a 'labels' entry in each "
                          "batch, or (example, label) pairs); give labels or use optin-est") from e
        raise


def _recon_batches(recon_data, calib, adapter, processor, cfg: PruneConfig, seq: int, dev) -> list[dict]:
    """The re-fit's examples on `dev`: the first cfg.recon.calib of recon_data, else of the calibration data."""
    from .calibration import as_batches, take

    data = calib if recon_data is None else as_batches(recon_data, adapter, processor, cfg.batch_size, seq,
                                                       cfg.data, "re-fit data")
    return devices.move(take(data, cfg.recon.calib), dev)


def _round_refit(prep, cfg: PruneConfig, dev):
    """The re-fit each latency round applies before its engine is built (optin.retune), on the
    same re-fit examples prune_model uses; None without --reconstruct."""
    if not cfg.reconstruct:
        return None
    from .reconstruct import reconstruct

    batches = []  # made at the first call: float32 re-tunes never call it

    def refit(dense, pruned, spec):
        if not batches:
            batches.extend(_recon_batches(prep.recon, prep.calib, prep.adapter, prep.tok, cfg, prep.seq, dev))
        reconstruct(dense, pruned, batches, spec, cfg.recon)
    return refit


@devices.out_of_memory(_oom_fix)
def prune(model_spec: str, data_spec: str, out: str, cfg: PruneConfig = PruneConfig(), latency=None,
          log=print) -> dict | None:
    """`optin prune`: load the model and data (optin.prepare), prune_model, save the folder.
    latency: an optin.retune.LatencyTarget; then the mask is searched under measured latency (the
    MAC budget is not used, and the report gives the MAC ratio reached). Under torchrun, ranks
    other than 0 return None after scoring."""
    from dataclasses import replace

    from .importance import get_method

    cfg.check()
    if cfg.token_share and latency is not None:  # refused before any scoring is spent
        raise BadInput("--token-share cannot be combined with --latency-target yet; drop one of them")
    if cfg.select not in ONE_SEARCH and latency is not None:
        raise BadInput(f"--select {cfg.select} cannot be combined with --latency-target yet (the re-tune searches "
                       "one-shot); drop one of them")
    dev = devices.resolve(cfg.device)  # a missing GPU or a refused --dtype fails here, before anything is loaded
    devices.check_dtype(dev, cfg.dtype, get_method(cfg.method).uses_gradients, f"--method {cfg.method}")
    distributed.init(dev)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    prep = prepare(model_spec, data_spec, cfg, log)
    cfg = replace(cfg, max_length=prep.seq)
    extra = {"seq_len": prep.seq, "max_length": prep.seq, "source": prep.path, "data": data_spec}
    scores = spec = retune = None
    if latency is not None:
        from .retune import latency_search

        dev = _place(prep.model, cfg, True)
        scores = _score(get_method(cfg.method), prep.adapter, devices.move(prep.calib, dev), cfg)
        if not distributed.is_main():
            distributed.finish()
            return None
        align = prep.adapter.default_align if cfg.align is None else cfg.align
        spec, retune = latency_search(scores, prep.adapter, prep.tok, prep.path, latency, extra, align,
                                      allocation(prep.adapter, cfg), _round_refit(prep, cfg, dev), log=log)
    res = prune_model(prep.model, prep.calib, config=cfg, processor=prep.tok, eval_data=prep.test,
                      recon_data=prep.recon, scores=scores, spec=spec, log=log)
    if res is None:
        return None
    res.extra = extra
    res.report.update(model=model_spec, model_path=prep.path, data=data_spec, retune=retune,
                      budget=None if latency else cfg.flops)
    res.report["seconds"]["total"] = time.time() - t0
    res.save(out)
    log(summary(res.report))
    return res.report


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
            f"{a.get('metric', 'accuracy')} {a['dense']:.2%} → {a['pruned']:.2%} (±{a['pruned_ci95']:.1%}, "
            f"n={a['test_examples']}); "
            f"heads {r['kept']['heads']} neurons {r['kept']['neurons']}"
            + (f" tokens {r['kept']['tokens']}" if r.get("tokens") else "") + f"; {r['seconds']['total']:.0f} s")
