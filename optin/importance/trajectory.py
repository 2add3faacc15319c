"""OPTIN trajectory importance (Khaki & Plataniotis, ICLR 2024, §3.1, eq. 2-4).

Masking unit u in layer i disturbs the features of every later layer z ≥ i and the logits.
For each z we take the manifold-distillation distance between masked and dense features,

    MD_z(u) = ‖G_z^masked − G_z^dense‖²_F / R²,   G = F̂ F̂ᵀ,  F̂ = row-L2-normalised tokens,

over a fixed, seeded subset of R tokens per calibration batch (drawn once, never redrawn; drawn
anew only where the token count changes, after Swin's patch merging), and
KD(u) = KL(p_dense ‖ p_masked) on the logits, averaged over their rows of class logits
(`adapter.task.rows`: one per example, one per pixel for a segmenter). Raw terms are kept per
candidate so that how they combine (`combine`) can be changed and ablated without rescoring.

A plain Σ_z MD_z ranks late-layer units lowest because they have few later layers to disturb
(measured: it emptied the last FFN layers of MiniLM). `combine(..., depth="normalized")`
divides each target layer's distances by their mean over all candidates that reach it, then
averages over the layers a unit reaches, so every unit is judged in the same units whatever
its depth. Other modes ("sum", "mean", "final") are kept for the ablation.

Cost: one partial forward (layers ≥ i, from cached dense inputs) per candidate per batch;
`candidates_per_pass` candidates of one layer share a pass over stacked copies of the batch.
FFN neurons are scored in groups of `group_size`, grouped within a layer by a cheap activation
proxy (mean |activation| × ‖output column‖), so a group holds neurons of similar strength.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import distributed
from ..errors import BadInput
from ..channels import ops
from ..devices import full_precision
from ..masking import mask_hooks
from . import Scores, register

DEPTH_MODES = ("normalized", "anchored", "sum", "mean", "final")


def _gram(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    with full_precision(x):  # float32 under --dtype bfloat16/float16 too (optin.devices)
        f = F.normalize(x.reshape(-1, x.shape[-1])[rows].float(), dim=-1)
        return f @ f.T


def token_rows(batch: dict, rows_per_batch: int, gen: torch.Generator, valid=None) -> torch.Tensor:
    """A seeded subset of the batch's real (non-padding) token rows, for the Gram matrices.
    valid: [B, n] real-token mask (Adapter.valid_tokens); default the batch's attention_mask."""
    valid = batch["attention_mask"] if valid is None else valid
    tokens = valid.reshape(-1).bool().nonzero().squeeze(1)
    return tokens[torch.randperm(len(tokens), generator=gen)[:rows_per_batch]]


def layer_rows(adapter, batch: dict, rows_per_batch: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Gram rows of each block's output. One draw per token layout: a model whose token count
    never changes draws once per batch and uses the same rows at every layer; Swin draws anew
    after each patch merging."""
    drawn: dict = {}
    rows = []
    for i in range(len(adapter.layers())):
        valid = adapter.valid_tokens(batch, i + 1)
        if tuple(valid.shape) not in drawn:
            drawn[tuple(valid.shape)] = token_rows(batch, rows_per_batch, gen, valid)
        rows.append(drawn[tuple(valid.shape)])
    return rows


def _runs(adapter, d, i: int) -> list:
    """(run, first neuron index) for each run of layer i's neurons (optin.adapters.base.Channels)."""
    out, start = [], 0
    for run in (adapter.parts(i).neuron_runs(d.layer_ffn[i]) if d.layer_ffn[i] else []):
        out.append((run, start))
        start += run.width
    return out


class _DenseCache:
    """Dense per-batch block inputs, Gram matrices per layer output, log-probs, FFN activity."""

    def __init__(self, adapter, batches, rows_per_batch: int, seed: int):
        d = adapter.dims()
        gen = torch.Generator().manual_seed(seed)
        self.items = []
        act = torch.zeros(d.num_layers, d.ffn_size)
        count = torch.zeros(d.num_layers, d.ffn_size)  # rows (real tokens, positions) each neuron was seen on
        runs = [_runs(adapter, d, i) for i in range(d.num_layers)]
        acts = {}
        hooks = [run.consumer.register_forward_pre_hook(
            lambda m, a, key=(i, r): acts.__setitem__(key, a[0].detach()))
            for i in range(d.num_layers) for r, (run, _) in enumerate(runs[i])]
        try:
            for b in batches:
                rows = layer_rows(adapter, b, rows_per_batch, gen)
                h, ctx = adapter.embed(b)
                inputs, grams = [], []
                for i in range(d.num_layers):
                    inputs.append(h)
                    h = adapter.run_layer(i, h, ctx)
                    grams.append(_gram(adapter.features(h), rows[i]))
                    valid = adapter.valid_tokens(b, i)  # the tokens this block's FFN ran on
                    for r, (run, start) in enumerate(runs[i]):
                        a = ops(run.consumer).rows(acts[(i, r)], valid)
                        act[i, start:start + run.width] += a.float().abs().sum(0).cpu()
                        count[i, start:start + run.width] += a.shape[0]
                logp = F.log_softmax(adapter.task.rows(adapter.head(h, ctx)).float(), -1)
                self.items.append((inputs, ctx, rows, grams, logp))
        finally:
            for hk in hooks:
                hk.remove()
        out_norm = torch.zeros(d.num_layers, d.ffn_size)
        for i in range(d.num_layers):
            for run, start in runs[i]:
                out_norm[i, start:start + run.width] = ops(run.consumer).in_norm(run.consumer).cpu()
        self.neuron_proxy = act / count.clamp(min=1) * out_norm


def _candidates(d, proxy, group_size):
    """(layer, kind, unit indices) for every head and every neuron group."""
    cands = [(i, "head", [h]) for i in range(d.num_layers) for h in range(d.layer_heads[i])]
    for i in range(d.num_layers):
        F_i = d.layer_ffn[i]
        order = torch.argsort(proxy[i, :F_i], descending=True).tolist()
        cands += [(i, "neurons", order[s:s + group_size]) for s in range(0, F_i, group_size)]
    return cands


def _passes(cands, per_pass: int) -> list[list[int]]:
    """Candidates evaluated together: up to `per_pass` of one layer and kind share a forward pass
    over `per_pass` copies of the batch (bigger matrix products; the same numbers up to rounding).
    Fixed before sharding, so any number of processes computes each candidate the same way."""
    out: list[list[int]] = []
    for c, (i, kind, _) in enumerate(cands):
        if out and len(out[-1]) < max(1, per_pass) and cands[out[-1][0]][:2] == (i, kind):
            out[-1].append(c)
        else:
            out.append([c])
    return out


def combine(md: torch.Tensor, kd: torch.Tensor, layer: torch.Tensor, depth: str, lam: float) -> torch.Tensor:
    """Per-candidate score from raw terms. md: [C, L] distances (0 for z < layer), kd: [C]."""
    if depth not in DEPTH_MODES:
        raise BadInput(f"unknown trajectory depth mode {depth!r}; choose one of {', '.join(DEPTH_MODES)}")
    C, L = md.shape
    reach = torch.arange(L)[None, :] >= layer[:, None]  # [C, L]: layers a candidate disturbs
    n_reach = reach.sum(1).float()
    if depth == "sum":
        traj = md.sum(1)
    elif depth == "mean":
        traj = md.sum(1) / n_reach
    elif depth == "final":
        traj = md[:, -1]
    else:
        if depth == "normalized":  # mean distance at z over every candidate that reaches z
            scale = md.sum(0) / reach.sum(0).clamp(min=1)
        else:  # anchored: what the first layer's units, which reach every z, do there on average
            scale = md[layer == layer.min()].mean(0)
        traj = (md / scale.clamp(min=1e-12)).sum(1) / n_reach
        kd = kd / kd.mean().clamp(min=1e-12)
    return traj + lam * kd


@register("optin")
@torch.no_grad()
def trajectory(adapter, batches, cfg):
    d = adapter.dims()
    cache = _DenseCache(adapter, batches, cfg.rows_per_batch, cfg.seed)
    cands = _candidates(d, cache.neuron_proxy, cfg.group_size)
    dev = next(adapter.model.parameters()).device
    md = torch.zeros(len(cands), d.num_layers, device=dev)
    kd = torch.zeros(len(cands), device=dev)
    passes = distributed.shard(_passes(cands, cfg.candidates_per_pass))  # all, unless under torchrun
    with mask_hooks(adapter) as state:
        bar = tqdm(total=sum(map(len, passes)), desc="trajectory scores", unit="cand",
                   disable=not distributed.is_main())
        for group in passes:
            i, kind = cands[group[0]][:2]
            k = len(group)
            mask = torch.ones(k, d.num_heads if kind == "head" else d.ffn_size, device=dev)
            for r, c in enumerate(group):
                mask[r, cands[c][2]] = 0.0
            for inputs, ctx, rows, grams, logp in cache.items:
                state.clear()  # one mask per copy of the batch: copy r carries candidate r
                (state.heads if kind == "head" else state.neurons)[i] = (
                    mask[0] if k == 1 else mask.repeat_interleave(inputs[i].shape[0], 0))
                h, kctx = inputs[i].repeat(k, *[1] * (inputs[i].dim() - 1)), adapter.repeat_batch(ctx, k)
                for z in range(i, d.num_layers):
                    h = adapter.run_layer(z, h, kctx)
                    for r, hr in enumerate(h.chunk(k)):
                        md[group[r], z] += (_gram(adapter.features(hr), rows[z]) - grams[z]).pow(2).sum() / grams[z].numel()
                q = F.log_softmax(adapter.task.rows(adapter.head(h, kctx)).float(), -1)
                for r, qr in enumerate(q.chunk(k)):
                    kd[group[r]] += F.kl_div(qr, logp, log_target=True, reduction="batchmean")
            bar.update(k)
        bar.close()
        state.clear()
    distributed.reduce_sum(md, kd)
    md, kd = md.cpu() / len(cache.items), kd.cpu() / len(cache.items)
    raw = {"md": md, "kd": kd, "layer": torch.tensor([c[0] for c in cands]), "kind": [c[1] for c in cands],
           "units": [c[2] for c in cands], "proxy": cache.neuron_proxy, "dims": d}
    return rescore(raw, cfg.depth, cfg.lam, meta={"group_size": cfg.group_size})


def rescore(raw: dict, depth: str, lam: float, meta: dict | None = None) -> Scores:
    """Per-unit scores from the raw trajectory terms under a given depth mode and λ."""
    d = raw["dims"]
    score = combine(raw["md"], raw["kd"], raw["layer"], depth, lam)
    heads = torch.zeros(d.num_layers, d.num_heads)
    neurons = torch.zeros(d.num_layers, d.ffn_size)
    for s, i, kind, units in zip(score.tolist(), raw["layer"].tolist(), raw["kind"], raw["units"]):
        if kind == "head":
            heads[i, units[0]] = s
        else:
            # share the group's score; break ties inside the group by the proxy (tiny weight)
            p = raw["proxy"][i, units]
            neurons[i, units] = s / len(units) * (1 + 1e-3 * p / p.max().clamp(min=1e-12))
    return Scores(heads, neurons, {"method": "optin", "depth": depth, "lam": lam,
                                   "candidates": len(raw["kind"]), **(meta or {}), "raw": raw}).only_present(d)
