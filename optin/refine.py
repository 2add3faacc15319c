"""The two steps that follow the Fisher mask search in Kwon et al. 2022 ("A Fast Post-Training
Pruning Framework for Transformers", NeurIPS 2022): mask rearrangement (§4.3) and mask tuning
(§4.4). Generic over families: only `adapter.parts/embed/run_layer/forward/valid_tokens` and
`mask_hooks`.

Rearrangement keeps each layer's number of kept heads and neurons and re-chooses which ones,
using the layer's block of the empirical Fisher matrix, I_l = Σ_examples g g^T with g the
gradient of the example's loss w.r.t. the layer's mask variables. Removing the units r (a 0/1
vector, r = 1 − m) costs about ½ r^T I_l r in loss (second-order Taylor at m = 1, the gradient
term vanishing at a trained model); the search saw only the diagonal of I_l. Two guards: the
block is shrunk toward its diagonal (128 examples give a rank-128 estimate of a 1,536-wide
block, whose off-diagonal an optimiser would fit), and an optional `verify` loss keeps a
re-chosen layer only if the real calibration loss drops (unverified, the re-chosen heads cost 13
dev points on MiniLM at 40% of MACs).

Tuning rescales the kept units so that, layer by layer, each sublayer's output projection
(attention output; FFN output) computed on the *pruned* model's inputs reconstructs the *dense*
model's on the calibration set. That output is linear in the mask, so each sublayer is a small
linear least-squares problem. We damp it toward 1 (ridge toward "no rescaling"), which can only
lower the calibration error against plain masks, and fall back to 1 where the solution is still
extreme (naive scales reached ±28 and lost accuracy here). `fold` writes the scales into the
input columns of the output projections, so the narrowed model has the same shapes and ops.

    blocks = fisher_blocks(adapter, calib)
    hm, nm = rearrange(hm, nm, blocks, verify=calibration_loss(adapter, calib))
    hs, ns = tune(adapter, calib, hm, nm)
    fold(adapter, hs, ns); narrow(adapter, PruneSpec.from_masks(model_type, hm, nm))
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .errors import BadInput
from .importance.fisher import mask_gradients
from .masking import mask_hooks


# --- Fisher blocks ---------------------------------------------------------------------------
@dataclass
class FisherBlocks:
    """Per-layer empirical Fisher matrices Σ g g^T (float64): heads [L, H, H], neurons [L, F, F].
    Their diagonals are the Fisher importance scores of `optin.importance.fisher`. `*_alpha` [L]:
    estimated shrinkage intensity toward the diagonal (see `_shrinkage`)."""

    heads: torch.Tensor
    neurons: torch.Tensor
    examples: int
    heads_alpha: torch.Tensor | None = None
    neurons_alpha: torch.Tensor | None = None
    # [L, U] bool: the units each layer has (Dims.present); None: all. Rearrangement re-chooses
    # only among them, so a unit beyond a narrower layer's width is never kept.
    heads_present: torch.Tensor | None = None
    neurons_present: torch.Tensor | None = None

    def matrices(self, shrink: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(heads, neurons) blocks, shrunk toward their diagonal by `*_alpha` if asked."""
        if not shrink:
            return self.heads, self.neurons
        return _shrunk(self.heads, self.heads_alpha), _shrunk(self.neurons, self.neurons_alpha)


def _shrunk(block: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
    if alpha is None:
        return block
    a = alpha.to(block)[:, None, None]
    return a * torch.diag_embed(block.diagonal(dim1=1, dim2=2)) + (1 - a) * block


def _shrinkage(g: torch.Tensor) -> torch.Tensor:
    """Schäfer & Strimmer (2005) intensity for shrinking the off-diagonal of a second-moment
    matrix toward zero, per layer: Σ_{i≠j} Var(S_ij) / Σ_{i≠j} S_ij², from per-example gradients
    g [N, L, U]. With N examples the matrix has rank ≤ N (128 examples, 1,536 neurons), so its
    off-diagonal is mostly noise that an optimiser over r^T I r would happily fit."""
    N, L, U = g.shape
    alpha = torch.ones(L, dtype=torch.float64)
    if N < 2:
        return alpha
    off = ~torch.eye(U, dtype=torch.bool)
    for i in range(L):  # one layer at a time: three [U, U] temporaries, not [L, U, U]
        x = g[:, i]
        S = x.T @ x / N
        var = ((x * x).T @ (x * x) - N * S ** 2) / (N * (N - 1))  # variance of each mean S_ij
        den = float((S ** 2)[off].sum())
        if den > 0:
            alpha[i] = min(max(float(var[off].sum()) / den, 0.0), 1.0)
    return alpha


def fisher_blocks(adapter, batches) -> FisherBlocks:
    """One forward+backward pass per calibration example (as the Fisher scores), keeping whole
    gradients instead of their squares."""
    grads = list(mask_gradients(adapter, batches, "fisher blocks"))
    total = len(grads)
    gh = torch.stack([g[0].double() for g in grads])  # [N, L, H]
    gn = torch.stack([g[1].double() for g in grads])  # [N, L, F]
    return FisherBlocks(torch.einsum("nlu,nlv->luv", gh, gh), torch.einsum("nlu,nlv->luv", gn, gn), total,
                        _shrinkage(gh), _shrinkage(gn), *adapter.dims().present())


# --- rearrangement ---------------------------------------------------------------------------
def removal_cost(mask: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """r^T I r per layer, r = 1 − mask: the quadratic loss estimate of the removed units."""
    r = 1.0 - mask.double()
    return torch.einsum("lu,luv,lv->l", r, block, r)


def _greedy(block: torch.Tensor, n_remove: int) -> torch.Tensor:
    """Remove units one at a time, each the one that raises r^T I r least given those removed."""
    U = block.shape[0]
    r = torch.zeros(U, dtype=torch.bool)
    c = torch.zeros(U, dtype=block.dtype)  # c = I r
    diag = block.diagonal()
    for _ in range(n_remove):
        gain = (2 * c + diag).masked_fill(r, float("inf"))
        u = int(torch.argmin(gain))
        r[u] = True
        c += block[:, u]
    return r


def _swap(block: torch.Tensor, r: torch.Tensor, max_swaps: int) -> torch.Tensor:
    """Best-improvement local search: remove a kept unit a and restore a removed unit b while that
    lowers r^T I r. With r' = r + e_a − e_b the change is 2c_a − 2c_b + I_aa + I_bb − 2I_ab."""
    r = r.clone()
    c = block @ r.double()
    diag = block.diagonal()
    scale = float(diag.sum()) or 1.0
    for _ in range(max_swaps):
        a, b = (~r).nonzero().flatten(), r.nonzero().flatten()
        if len(a) == 0 or len(b) == 0:
            break
        delta = (2 * c[a] + diag[a])[:, None] + (diag[b] - 2 * c[b])[None, :] - 2 * block[a][:, b]
        k = int(torch.argmin(delta))
        if float(delta.flatten()[k]) >= -1e-12 * scale:  # relative tolerance: no ping-pong on ties
            break
        ia, ib = int(a[k // len(b)]), int(b[k % len(b)])
        r[ia], r[ib] = True, False
        c += block[:, ia] - block[:, ib]
    return r


EXACT_SUBSETS = 4096  # C(12, 6) = 924: every head row of a 12-head layer is solved exactly


def _exact(block: torch.Tensor, n_remove: int) -> torch.Tensor:
    """The best removal set of size n_remove by enumeration. Swaps alone can stall: two heads
    whose Fisher cross term is strongly negative are cheap to remove together and dear one at a
    time (a 4-head MPNet layer: removing {0, 1} costs 9.9, the swap search stopped at 18.7)."""
    U = block.shape[0]
    subsets = torch.tensor(list(itertools.combinations(range(U), n_remove)), dtype=torch.long)
    r = torch.zeros(len(subsets), U, dtype=block.dtype).scatter_(1, subsets, 1.0)
    return r[int(torch.argmin(torch.einsum("cu,uv,cv->c", r, block, r)))].bool()


def _rearrange_layers(mask: torch.Tensor, blocks: torch.Tensor, max_swaps: int | None,
                      present: torch.Tensor | None = None) -> torch.Tensor:
    out = mask.clone()
    for i in range(mask.shape[0]):
        units = torch.arange(mask.shape[1]) if present is None else present[i].nonzero().flatten()
        keep = mask[i, units] > 0
        U, n_remove = keep.numel(), int((~keep).sum())
        if n_remove in (0, U):
            continue
        I = blocks[i][units][:, units]
        swaps = U if max_swaps is None else max_swaps
        # refine both the search's choice and the greedy one; the search's wins ties, so the
        # result never scores worse than the input
        cands = [_swap(I, ~keep, swaps), _swap(I, _greedy(I, n_remove), swaps)]
        if math.comb(U, n_remove) <= EXACT_SUBSETS:  # heads: few enough to enumerate
            cands.append(_exact(I, n_remove))
        costs = [float(r.double() @ I @ r.double()) for r in cands]
        best = cands[min(range(len(cands)), key=lambda j: (costs[j], j))]
        out[i, units] = (~best).to(mask.dtype)
    return out


def calibration_loss(adapter, batches):
    """A `verify` for `rearrange`: (head_mask, neuron_mask) → mean labelled cross-entropy of the
    masked model on `batches`."""
    @torch.no_grad()
    def loss(head_mask, neuron_mask) -> float:
        total, n = 0.0, 0
        with mask_hooks(adapter) as state:
            state.set(head_mask, neuron_mask)
            for b in batches:
                logits = adapter.forward(b)
                total += float(torch.nn.functional.cross_entropy(logits, b["labels"], reduction="sum"))
                n += len(b["labels"])
        return total / max(n, 1)
    return loss


def rearrange(head_mask, neuron_mask, blocks: FisherBlocks, shrink: bool = True, max_swaps: int | None = None,
              verify=None):
    """Same per-layer counts, units re-chosen to minimise each layer's r^T I_l r.

    shrink: use the blocks shrunk toward their diagonal (`FisherBlocks.matrices`); the raw
    matrix has rank ≤ the number of calibration examples. max_swaps: swap refinements per layer
    (default: the layer's width). verify: optional (head_mask, neuron_mask) → loss, e.g.
    `calibration_loss(adapter, batches)`; each changed layer row is then kept only if it lowers
    that loss. The quadratic model is a Taylor expansion at the dense model, and it misjudged
    removing 10 of 12 heads in MiniLM's last layer. Returns new 0/1 masks."""
    if blocks.heads.shape[:2] != tuple(head_mask.shape) or blocks.neurons.shape[:2] != tuple(neuron_mask.shape):
        raise BadInput(f"Fisher blocks are for {tuple(blocks.heads.shape[:2])} heads and "
                       f"{tuple(blocks.neurons.shape[:2])} neurons, the masks are {tuple(head_mask.shape)} and "
                       f"{tuple(neuron_mask.shape)}; compute the blocks on the same (dense) model")
    bh, bn = blocks.matrices(shrink)
    new_h = _rearrange_layers(head_mask, bh, max_swaps, blocks.heads_present)
    new_n = _rearrange_layers(neuron_mask, bn, max_swaps, blocks.neurons_present)
    if verify is None:
        return new_h, new_n
    hm, nm = head_mask.clone(), neuron_mask.clone()
    changed = [(out, new, i) for i in range(hm.shape[0]) for out, new in ((hm, new_h), (nm, new_n))
               if not torch.equal(out[i], new[i])]
    best = verify(hm, nm)
    for out, new, i in tqdm(changed, desc="verify rearrangement", unit="row"):
        old = out[i].clone()
        out[i] = new[i]
        loss = verify(hm, nm)
        if loss < best:
            best = loss
        else:
            out[i] = old
    return hm, nm


# --- tuning ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TuneConfig:
    damp: float = 1e-2       # ridge weight toward scale 1, relative to the Gram's mean diagonal
    max_scale: float = 10.0  # a sublayer with any |scale| above this keeps scale 1 (ill-conditioned)


class _Normal:
    """Normal equations of one sublayer, ||Σ_u s_u W_u x_u − t||² over tokens, for units of
    `width` input columns of `lin` (head_dim columns per head, one per neuron). Accumulated over
    input columns, G[u, v] = Σ_{k∈u, l∈v} (X^T X)_{kl} (W^T W)_{kl}, so no per-unit output
    [tokens, units, hidden] is ever built."""

    def __init__(self, lin: torch.nn.Linear, keep: torch.Tensor, width: int):
        self.width = width
        self.units = keep.nonzero().flatten()
        self.cols = (self.units[:, None] * width + torch.arange(width)).flatten()
        self.w = lin.weight.detach().double()[:, self.cols]  # [out, kept cols]
        K = len(self.cols)
        self.xx = torch.zeros(K, K, dtype=torch.float64)
        self.xt = torch.zeros(K, dtype=torch.float64)
        self.tt = 0.0

    def add(self, x: torch.Tensor, t: torch.Tensor):
        """x: [tokens, in] projection inputs (pruned model), t: [tokens, out] target minus bias."""
        x = x.double()[:, self.cols]
        t = t.double()
        self.xx += x.T @ x
        self.xt += (x * (t @ self.w)).sum(0)
        self.tt += float((t * t).sum())

    def _pool(self, m: torch.Tensor, dims: int) -> torch.Tensor:
        n, w = len(self.units), self.width
        if dims == 1:
            return m.view(n, w).sum(1)
        return m.view(n, w, n, w).sum((1, 3))

    def system(self):
        return self._pool(self.xx * (self.w.T @ self.w), 2), self._pool(self.xt, 1)

    def error(self, s: torch.Tensor) -> float:
        """||Σ_u s_u W_u x_u − t||² for the kept units' scales s."""
        G, r = self.system()
        s = s.double()[self.units]
        return float(s @ G @ s - 2 * r @ s) + self.tt

    def solve(self, cfg: TuneConfig) -> tuple[torch.Tensor, bool]:
        """Scales of the kept units, and whether the damped solution was accepted."""
        G, r = self.system()
        ones = torch.ones_like(r)
        lam = cfg.damp * float(G.diagonal().mean())
        try:
            s = torch.linalg.solve(G + lam * torch.eye(len(r), dtype=G.dtype), r + lam * ones)
        except RuntimeError:  # singular with no damping
            return ones, False
        if not torch.isfinite(s).all() or float(s.abs().max()) > cfg.max_scale:
            return ones, False
        return s, True


def _tokens(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[B, n, c] → [real tokens, c]; padding rows would pull the fit toward garbage."""
    return x[valid] if x.dim() == 3 and x.shape[:2] == valid.shape else x.reshape(-1, x.shape[-1])


class _Tap:
    """Forward hook keeping the last input (after the mask hooks) and output of a Linear."""

    def __init__(self, lin):
        self.x = self.y = None
        self.handle = lin.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.x, self.y = args[0].detach(), output.detach()


@torch.no_grad()
def _walk(adapter, batches, head_mask, neuron_mask, scales, cfg: TuneConfig | None, desc: str):
    """Layer by layer: dense targets on dense inputs, pruned features on pruned inputs (earlier
    layers already at their final scales). Solves each sublayer if cfg is given, else evaluates
    `scales`. Returns head scales, neuron scales, errors [L, 2] (attention, FFN) and the number
    of sublayers that fell back to scale 1."""
    d = adapter.dims()
    hs, ns = (head_mask.clone().float(), neuron_mask.clone().float()) if scales is None else \
        (scales[0].clone().float(), scales[1].clone().float())
    err = torch.zeros(d.num_layers, 2, dtype=torch.float64)
    fallbacks = 0
    inputs = [adapter.embed(b) for b in batches]
    dense_h = [h for h, _ in inputs]
    pruned_h = list(dense_h)
    ctxs = [c for _, c in inputs]
    with mask_hooks(adapter) as state:
        for i in tqdm(range(d.num_layers), desc=desc, unit="layer"):
            valid = [adapter.valid_tokens(b, i) for b in batches]  # the tokens block i runs on
            p = adapter.parts(i)
            taps = (_Tap(p.o), _Tap(p.ffn_out))
            try:
                targets = []  # dense sublayer outputs (attention, FFN) on real tokens, per batch
                state.clear()
                for j in range(len(batches)):
                    dense_h[j] = adapter.run_layer(i, dense_h[j], ctxs[j])
                    targets.append([_tokens(t.y, valid[j]) for t in taps])
                for k, (lin, keep, width) in enumerate(((p.o, head_mask[i, :d.layer_heads[i]] > 0, d.layer_head_dim[i]),
                                                        (p.ffn_out, neuron_mask[i, :d.layer_ffn[i]] > 0, 1))):
                    bias = lin.bias.detach() if lin.bias is not None else 0.0
                    eq = _Normal(lin, keep, width)
                    # the sublayer's own mask is binary while its features are collected; the FFN
                    # sees the attention at its final scales
                    state.heads[i] = head_mask[i] if k == 0 else hs[i]
                    state.neurons[i] = neuron_mask[i]
                    for j in range(len(batches)):
                        adapter.run_layer(i, pruned_h[j], ctxs[j])
                        eq.add(_tokens(taps[k].x, valid[j]), targets[j][k] - bias)
                    scale = hs if k == 0 else ns
                    if cfg is not None and len(eq.units):
                        s, ok = eq.solve(cfg)
                        if not ok:
                            fallbacks += 1
                            tqdm.write(f"mask tuning: layer {i} {('attention', 'FFN')[k]}: no stable least-squares "
                                       f"solution (|scale| > {cfg.max_scale:g}); keeping scale 1")
                        scale[i, eq.units] = s.float()
                    err[i, k] = eq.error(scale[i])
                state.heads[i], state.neurons[i] = hs[i], ns[i]
                for j in range(len(batches)):
                    pruned_h[j] = adapter.run_layer(i, pruned_h[j], ctxs[j])
            finally:
                for t in taps:
                    t.handle.remove()
    return hs, ns, err, fallbacks


def tune(adapter, batches, head_mask, neuron_mask, cfg: TuneConfig = TuneConfig()):
    """Least-squares scales of the kept heads and neurons (0 where pruned), as [L, H] and [L, F]
    masks for `mask_hooks` or `fold`. A sublayer whose solution is ill-conditioned keeps 1."""
    hs, ns, _, _ = _walk(adapter, batches, head_mask, neuron_mask, None, cfg, "mask tuning")
    return hs, ns


def reconstruction_errors(adapter, batches, head_mask, neuron_mask, head_scale=None, neuron_scale=None):
    """Squared error of each sublayer's output projection against the dense model's, summed over
    real calibration tokens, layer by layer as `tune` sees it: [L, 2] (attention, FFN).
    Scales default to the masks themselves (no tuning)."""
    scales = (head_mask if head_scale is None else head_scale, neuron_mask if neuron_scale is None else neuron_scale)
    return _walk(adapter, batches, head_mask, neuron_mask, scales, None, "reconstruction error")[2]


@torch.no_grad()
def fold(adapter, head_scale, neuron_scale):
    """Multiply each head's input columns of `o` and each neuron's input column of `ffn_out` by
    its scale, in place, on the unnarrowed model; narrowing afterwards keeps the same shapes and
    ops as plain pruning. Pruned units get 0, so even unnarrowed the model equals the masked one."""
    d = adapter.dims()
    for i in range(d.num_layers):
        p = adapter.parts(i)
        H, hd, F = d.layer_heads[i], d.layer_head_dim[i], d.layer_ffn[i]
        if getattr(p.o, "in_features", None) != H * hd or getattr(p.ffn_out, "in_features", None) != F:
            raise BadInput(f"layer {i} is already narrowed; fold the scales before narrowing")
        w = p.o.weight
        w.copy_((w.view(w.shape[0], H, hd) * head_scale[i, :H].to(w)[None, :, None]).view_as(w))
        p.ffn_out.weight.mul_(neuron_scale[i, :F].to(p.ffn_out.weight)[None, :])
    return adapter.model
