"""The OPTIN trajectory estimate in one backward pass per probe for every target layer:
`--method optin-fast`.

Same targets, linearisation and `combine` as `optin-est` (estimate.py): removing unit u of layer i
costs MD_z(u) ≈ ‖∂G_z/∂m_u‖²/R² at each target layer z ≥ i and KD(u) ≈ ½ Σ_c p_c (∂ log p_c/∂m_u)²;
depth "normalized" divides each MD_z by its mean over the units that reach z and averages over the
reached layers. optin-est spends a backward pass per probe *and* target layer; here:

1. Per-example masks ([batch, layers, units], all ones). Examples do not interact before the
   Gram matrix, so the gradient with respect to example b's mask is b's own share J_{z,b} of the
   Gram change. The score sums each example's share squared, Σ_b ‖J_{z,b} u‖², i.e. it drops the
   cross-example products ⟨J_{z,b} u, J_{z,b'} u⟩ of ‖Σ_b J_{z,b} u‖². Measured (bench/
   fast_estimator.py): they are a few per cent of the total and change the ranking less than
   optin-est's own probe noise does.
2. One probe serves every layer: each example is assigned one target layer (`assignment`: a
   random rotation, B/L examples per layer in every probe and a new layer for each example in
   each of L probes; or, `optin-fast-depth`, more examples for late layers, `depth_shares`), and
   layer z's probe v_z · G̃_z lets gradient through only the Gram rows of the examples assigned
   to z (the other rows are detached). So example b's mask gradient holds layer z(b)'s term
   alone, with no cross terms between layers: per probe, every layer gets an unbiased estimate
   of its share from its |S_z| examples (scaled by B/|S_z|; averaged over the probes that gave
   the layer any), and the normaliser of `combine` is the mean of the same estimates, so a
   probe's shared random factor divides out (a separate pilot for the weights would not: its
   noise does not cancel).
3. KD exactly in one more pass: Σ_b |a_b ∂z_b|² with a_b the rank-(C − 1) root of the softmax
   Fisher (estimate.kd_root); exact for two classes.

Cost per calibration batch: one forward with graph, `probes` + 1 backward passes through the
whole model (optin-est: probes × (layers + 1) passes of mean depth (layers + 1) / 2).

The batches are optin-est's, as given, so both estimate one objective: a batch's Gram matrix
spans its examples, and its rows are drawn with the same seed. Re-forming the batches by length
(what this scorer did until 2026-12-03, to compute less padding) draws another sample of rows
and pairs, noise the two scorers then disagree by (bench/README.md, "`optin-fast-depth`"). The
padding is saved within each batch instead: its text examples run in `GROUPS` groups of similar
length, each trimmed to its longest member (examples meet only in the Gram matrix, which is
formed on the whole batch).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import distributed
from ..devices import full_precision
from . import register
from .estimate import _signs, kd_root, per_example_masks
from .trajectory import layer_rows, rescore

# backward passes per batch for the MD terms. minilm-rt's calibration set, Spearman with optin-est
# (batches then re-formed by length): 4 random 0.977, 6 rotation 0.981 (but 1.5 points lost at 0.4),
# 8 rotation 0.982 at 2.6x Fisher's time on BERT-base (bench/fast_estimator.py)
PROBES = 8
GROUPS = 4  # length groups per text batch (32 examples: 8 a group)


def length_groups(batch: dict, groups: int = GROUPS) -> list[torch.Tensor]:
    """The batch's examples in up to `groups` groups of similar length (indices, shortest first).
    Image batches (no attention_mask) and left-padded text form one group."""
    m = batch.get("attention_mask")
    if m is None or bool((m[:, 1:] > m[:, :-1]).any()):  # not padded on the right
        return [torch.arange(len(next(iter(batch.values()))))]
    return [g for g in torch.argsort(m.sum(1), stable=True).chunk(groups) if len(g)]


def _forward_grouped(adapter, batch: dict, groups: list[torch.Tensor], state, hm, nm):
    """Each block's features [B, n, D] and the head's output, as one pass over `batch` would give
    them, computed group by group on trimmed inputs with each group's rows of the per-example masks."""
    L = adapter.dims().num_layers
    if len(groups) == 1:
        state.heads, state.neurons = list(hm.unbind(1)), list(nm.unbind(1))
        h, ctx = adapter.embed(batch)
        feats = []
        for i in range(L):
            h = adapter.run_layer(i, h, ctx)
            feats.append(adapter.features(h))
        return feats, adapter.head(h, ctx)
    B, n = batch["attention_mask"].shape
    outs, heads = [[] for _ in range(L)], []
    for idx in groups:
        width = int(batch["attention_mask"][idx].sum(1).max())
        sub = {k: (v[idx, :width] if v.dim() == 2 and v.shape[1] == n else v[idx]) for k, v in batch.items()}
        state.heads, state.neurons = list(hm[idx].unbind(1)), list(nm[idx].unbind(1))
        h, ctx = adapter.embed(sub)
        for i in range(L):
            h = adapter.run_layer(i, h, ctx)
            outs[i].append(adapter.features(h))
        heads.append(adapter.head(h, ctx))
    order = torch.cat(groups).to(hm.device)
    feats = []
    for parts in outs:  # back to the batch's layout: padding rows stay zero (no Gram row reads them)
        full = parts[0].new_zeros(B, n, parts[0].shape[-1])
        feats.append(full.index_put((order,), torch.cat([F.pad(x, (0, 0, 0, n - x.shape[1])) for x in parts])))
    return feats, torch.cat(heads)[torch.argsort(order)]


def _rows_features(x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-normalised features of the Gram rows (float32), and the example each row belongs to."""
    with full_precision(x):
        f = F.normalize(x.reshape(-1, x.shape[-1])[rows].float(), dim=-1)
    return f, rows.to(x.device) // x.shape[1]


def depth_shares(L: int) -> torch.Tensor:
    """The share of each probe's examples that serves target layer z under "depth" assignment:
    ∝ √(Σ_{i≤z} 1/(L − i)²). Target z's noise reaches every unit of layers i ≤ z, divided by the
    L − i layers such a unit reaches, so this share minimises the summed variance of the scores
    (equal units per layer; Neyman allocation). It gives late targets more: a late unit is
    scored from few targets, each weighing much."""
    w = torch.tensor([sum(1.0 / (L - i) ** 2 for i in range(z + 1)) for z in range(L)]).sqrt()
    return w / w.sum()


def assignment(L: int, B: int, probes: int, mode: str, gen: torch.Generator) -> list[torch.Tensor]:
    """Each probe's target layer per example. rotation: B/L examples per layer in every probe and
    a new layer for each example in each of L probes; depth: `depth_shares` of the examples per
    layer, from points on a grid of B that moves on by (B + 1)/probes between probes: examples change
    layers, and the fractional step lets a layer whose share is under one example per probe get
    its share over the probes (an integer step would give it none in every probe)."""
    order = torch.randperm(B, generator=gen)
    if mode == "rotation":
        return [(order + p) % L for p in range(probes)]
    cdf = depth_shares(L).cumsum(0)
    return [torch.searchsorted(cdf, ((order + p * (B + 1) / probes + 0.5) % B) / B).clamp(max=L - 1)
            for p in range(probes)]


ASSIGNMENTS = ("rotation", "depth")


@register("optin-fast", gradients=True)
def trajectory_fast(adapter, batches, cfg, probes: int = PROBES, assign: str = "rotation", groups=length_groups):
    """groups(batch): the index groups a batch's forward runs in (`length_groups`)."""
    if assign not in ASSIGNMENTS:
        raise ValueError(f"assign must be one of {ASSIGNMENTS}, got {assign!r}")
    d = adapter.dims()
    L = d.num_layers
    dev = next(adapter.model.parameters()).device
    md_h, md_n = torch.zeros(L, d.num_heads, L, device=dev), torch.zeros(L, d.ffn_size, L, device=dev)
    kd_h, kd_n = torch.zeros(L, d.num_heads, device=dev), torch.zeros(L, d.ffn_size, device=dev)
    served = torch.zeros(L, device=dev)  # batches in which each target layer got examples
    rows_gen = torch.Generator().manual_seed(cfg.seed)  # optin-est's (and exact scoring's) Gram rows
    rows = [layer_rows(adapter, b, cfg.rows_per_batch, rows_gen) for b in batches]
    mine = distributed.shard(range(len(batches)))  # all of them unless launched by torchrun
    bar = tqdm(total=len(mine) * (probes + 1), desc="trajectory estimate (one pass per probe)", unit="pass",
               disable=not distributed.is_main())
    for bi in mine:
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + bi + 1)  # same on any rank
        B = len(batches[bi][adapter.input_names()[0]])  # calibration needs no labels
        with per_example_masks(adapter, B, dev) as (hm, nm, state):
            out, logits = _forward_grouped(adapter, batches[bi], groups(batches[bi]), state, hm, nm)
            feats = [_rows_features(x, rows[bi][i]) for i, x in enumerate(out)]
            logp = F.log_softmax(adapter.task.rows(logits).float(), -1)  # a row per example (pixel)
            layers = assignment(L, B, probes, assign, gen)
            bh, bn = torch.zeros_like(md_h), torch.zeros_like(md_n)  # this batch's sums per target layer
            probes_of = torch.zeros(L, device=dev)  # probes that gave each layer examples
            for p in range(probes):
                layer_of = layers[p].to(dev)
                target, owners = 0.0, []
                for z, (f, ex) in enumerate(feats):
                    mine_z = layer_of[ex] == z  # rows whose example serves layer z in this probe
                    owners.append(layer_of == z)
                    if not bool(mine_z.any()):
                        continue
                    g = torch.where(mine_z[:, None], f, f.detach())
                    with full_precision(g):  # the Gram in float32 under a 16-bit --dtype too
                        target = target + (_signs((len(f), len(f)), gen, dev) * (g @ g.T)).sum()
                gh, gn = torch.autograd.grad(target, [hm, nm], retain_graph=True, allow_unused=True,
                                             materialize_grads=True)
                for z, own in enumerate(owners):
                    k = int(own.sum())
                    if k:  # layer z's share of the batch, from its k examples, scaled to all B
                        w = B / (k * feats[z][0].shape[0] ** 2)
                        bh[..., z] += w * (gh[own] ** 2).sum(0)
                        bn[..., z] += w * (gn[own] ** 2).sum(0)
                        probes_of[z] += 1
                bar.update()
            got = probes_of > 0  # the mean over the probes that served a layer (all, when B ≥ L)
            md_h[..., got] += bh[..., got] / probes_of[got]
            md_n[..., got] += bn[..., got] / probes_of[got]
            served += got.float()
            root = kd_root(logp)  # exact KD: each example's own Jacobian row
            # signs also where an example has several rows (a segmenter's pixels): they sum in its mask's gradient
            signs = _signs(root.shape[:2], gen, dev) if root.shape[1] > 2 or len(root) != B else 1.0
            with full_precision(logp):
                kd_target = (signs * torch.einsum("brc,bc->br", root, logp)).sum()
            gh, gn = torch.autograd.grad(kd_target, [hm, nm], allow_unused=True, materialize_grads=True)
            kd_h += 0.5 * (gh ** 2).sum(0) / B
            kd_n += 0.5 * (gn ** 2).sum(0) / B
            bar.update()
    bar.close()
    distributed.reduce_sum(md_h, md_n, kd_h, kd_n, served)
    served = served.cpu().clamp(min=1)
    md_h, md_n = md_h.cpu() / served, md_n.cpu() / served
    kd_h, kd_n = kd_h.cpu() / len(batches), kd_n.cpu() / len(batches)
    ph, pn = d.present()  # the units each layer has, in (layer, unit) order
    units = [(i, "head", [u]) for i in range(L) for u in range(d.layer_heads[i])]
    units += [(i, "neurons", [u]) for i in range(L) for u in range(d.layer_ffn[i])]
    layer = torch.tensor([c[0] for c in units])
    md = torch.cat([md_h[ph], md_n[pn]])
    md = md * (torch.arange(L)[None, :] >= layer[:, None])  # terms before a unit's own layer are 0
    raw = {"md": md, "kd": torch.cat([kd_h[ph], kd_n[pn]]), "layer": layer, "kind": [c[1] for c in units],
           "units": [c[2] for c in units], "proxy": torch.ones(L, d.ffn_size), "dims": d}
    return rescore(raw, cfg.depth, cfg.lam, meta={"method": "optin-fast", "probes": probes, "assign": assign})


@register("optin-fast-depth", gradients=True)
def trajectory_fast_depth(adapter, batches, cfg, probes: int = PROBES):
    """optin-fast with the "depth" assignment (more of each probe's examples to late targets)."""
    return trajectory_fast(adapter, batches, cfg, probes, assign="depth")
