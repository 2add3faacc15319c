"""Token reduction (OPTIN §3.3 for vision transformers): which token positions each block keeps.

Importance. Dropping token position p in front of block i removes it from every later block;
its trajectory cost is measured like a head's (optin.importance.trajectory): the Gram
(token-similarity) distance at every block output z ≥ i over the tokens that remain, and the KL
divergence of the logits, on the calibration set. Tokens sit at fixed positions (patches), so a
position's score is one number per block, shared by every image: the kept sets are constants
and the narrowed model gathers them with a constant index, which the ONNX file and the engine
run as a plain Gather on a shorter sequence.

Schedule. Each droppable position p picks the block d_p before which it is dropped (d_p = L:
kept to the end). Minimising Σ_p score[d_p, p] + μ · (MACs p still costs before d_p) is solved
exactly per position for a multiplier μ, and μ is bisected until the MACs meet the tokens' part of
the budget. A position kept up to d_p is kept in every block before it, so the kept sets are
nested and their sizes never grow with depth; the leading special tokens ([CLS]) are never dropped.

Split of the budget. `share` of the MAC reduction (1 − budget) is taken by tokens, at dense head
and neuron widths; the head/neuron search then fills the whole budget with per-block costs at
the reduced token counts (optin.prune).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import distributed
from .devices import full_precision, model_device
from .errors import BadInput, InfeasibleBudget
from .importance.trajectory import _passes, combine


def check_schedule(adapter, tokens) -> None:
    """Token sets must be sorted, nested, within the sequence, and keep the special tokens."""
    n, s = adapter.seq_len(None), adapter.special_tokens
    if not adapter.token_reduction:
        raise BadInput(f"token reduction is not supported for {adapter.config.model_type} models "
                       "(only ViT/DeiT image classifiers); drop --token-share")
    if len(tokens) != len(adapter.layers()):
        raise BadInput(f"spec has token sets for {len(tokens)} layers, the model has {len(adapter.layers())}")
    prev = set(range(n))
    for i, keep in enumerate(tokens):
        if list(keep) != sorted(set(keep)) or not set(keep) <= prev or not set(range(s)) <= set(keep):
            raise BadInput(f"spec token set of layer {i} is not a sorted subset of layer {i - 1}'s that keeps "
                           f"the first {s} special tokens; use the spec made by optin prune")
        prev = set(keep)


@torch.no_grad()
def token_scores(adapter, batches, cfg) -> tuple[torch.Tensor, dict]:
    """[layers, tokens] importance of keeping position p into block i (special tokens: +inf), and
    the raw terms per candidate (md [C, layers], kd [C], cands (layer, "token", [position])).
    cfg: optin.importance.ScoreConfig (lam, depth, candidates_per_pass)."""
    L, n, s = len(adapter.layers()), adapter.seq_len(None), adapter.special_tokens
    cands = [(i, "token", [p]) for i in range(L) for p in range(s, n)]
    dev = model_device(adapter.model)
    md, kd = torch.zeros(len(cands), L, device=dev), torch.zeros(len(cands), device=dev)
    passes = distributed.shard(_passes(cands, cfg.candidates_per_pass))
    bar = tqdm(total=len(batches) * sum(map(len, passes)), desc="token scores", unit="cand",
               disable=not distributed.is_main())
    for b in batches:
        h, ctx = adapter.embed(b)
        inputs, feats = [], []
        for i in range(L):
            inputs.append(h)
            h = adapter.run_layer(i, h, ctx)
            feats.append(F.normalize(h.float(), dim=-1))
        logp = F.log_softmax(adapter.head(h, ctx).float(), -1)
        for group in passes:
            i, k = cands[group[0]][0], len(group)
            keeps = [torch.tensor([q for q in range(n) if q != cands[c][2][0]]) for c in group]
            x, kctx = torch.cat([inputs[i][:, keep] for keep in keeps]), adapter.repeat_batch(ctx, k)
            for z in range(i, L):
                x = adapter.run_layer(z, x, kctx)
                for r, xr in enumerate(x.chunk(k)):
                    f, fd = F.normalize(xr.float(), dim=-1), feats[z][:, keeps[r]]
                    with full_precision(f):  # Gram matrices in float32 under a 16-bit --dtype too
                        md[group[r], z] += (f @ f.transpose(1, 2) - fd @ fd.transpose(1, 2)).pow(2).mean()
            q = F.log_softmax(adapter.head(x, kctx).float(), -1)
            for r, qr in enumerate(q.chunk(k)):
                kd[group[r]] += F.kl_div(qr, logp, log_target=True, reduction="batchmean")
            bar.update(k)
    bar.close()
    distributed.reduce_sum(md, kd)
    md, kd = md.cpu() / len(batches), kd.cpu() / len(batches)
    score = combine(md, kd, torch.tensor([c[0] for c in cands]), cfg.depth, cfg.lam)
    out = torch.full((L, n), float("inf"))
    out[:, s:] = score.view(L, n - s)
    return out, {"md": md, "kd": kd, "cands": cands}


def schedule(scores: torch.Tensor, special: int, macs, target: float) -> list[tuple[int, ...]]:
    """Kept positions per block under `target` MACs. macs(counts) → MACs per example with
    counts[i] tokens entering block i (dense head and neuron widths)."""
    L, n = scores.shape
    if macs([special] * L) > target:
        raise InfeasibleBudget(f"even keeping only the {special} special tokens costs {macs([special] * L):.4g} MACs "
                               f"> {target:.4g}; lower --token-share")
    # MACs one token adds to each block (at the dense count), and what it costs kept up to block d
    full = macs([n] * L)
    per_block = torch.tensor([full - macs([n] * i + [n - 1] + [n] * (L - i - 1)) for i in range(L)],
                             dtype=torch.float64)
    kept_cost = torch.cat([torch.zeros(1, dtype=torch.float64), per_block.cumsum(0)])  # [L + 1]
    # dropping before block d costs scores[d, p]; never dropping (d = L) costs nothing
    drop = torch.cat([scores[:, special:].double(), torch.zeros(1, n - special, dtype=torch.float64)])

    def plan(mu: float) -> torch.Tensor:  # d_p for each droppable position
        return torch.argmin(drop + mu * kept_cost[:, None], dim=0)

    def counts(d: torch.Tensor) -> list[int]:
        return [special + int((d > i).sum()) for i in range(L)]

    if macs(counts(plan(0.0))) <= target:
        d = plan(0.0)
    else:
        lo, hi = 0.0, 1.0
        while macs(counts(plan(hi))) > target:
            hi *= 4
        for _ in range(100):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if macs(counts(plan(mid))) > target else (lo, mid)
        d = plan(hi)
    return [tuple(range(special)) + tuple(p + special for p in range(n - special) if d[p] > i) for i in range(L)]
