"""A fast estimate of the OPTIN trajectory score: `--method optin-est`.

The exact method (trajectory.py) runs one partial forward pass per candidate. Here every head and
every single FFN neuron is scored from a handful of backward passes, with the same targets:

Each exact term is a squared distance that is zero, with zero gradient, at the dense model:
MD_z(m) = ‖G_z(m) − G_z(1)‖²/R² and KD(m) = KL(p(1) ‖ p(m)). Its second-order (Gauss-Newton)
expansion around m = 1 is exact to that order: removing unit u (δm = −e_u) costs
MD_z(u) ≈ ‖∂G_z/∂m_u‖²/R² and KD(u) ≈ ½ Σ_c p_c (∂ log p_c/∂m_u)² (per example). Both are squared
Jacobian columns, estimated for all units at once by Hutchinson probes: for random signs v,
E[(∂(v·G_z)/∂m_u)²] = ‖∂G_z/∂m_u‖². One backward pass per probe and target layer gives every
unit's term for that layer, so the raw terms have the exact method's shape and are combined by
the same `combine` (depth modes, λ).

It is a linearisation: a unit whose removal moves the features far from the dense point (a whole
head, more than one neuron) may be misjudged; bench/estimator.py measures the rank correlation
and accuracy against exact scoring. The Gram rows are the exact method's, drawn with the same seed.
`optin-fast` (fast.py) estimates the same terms from one backward pass per probe for all layers.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import distributed
from ..masking import mask_hooks, mask_variables
from . import register
from .trajectory import _gram, layer_rows, rescore

PROBES = 8  # Hutchinson probes per target per batch (relative noise ~ sqrt(2 / (probes × batches)))


def _signs(shape, gen, device="cpu") -> torch.Tensor:
    return (torch.randint(0, 2, shape, generator=gen).float() * 2 - 1).to(device)  # same draws on any device


def kd_root(logp: torch.Tensor) -> torch.Tensor:
    """[B, C, C] rows a_b with a_bᵀa_b = diag(p_b) − p_b p_bᵀ (the softmax Fisher, rank C − 1; the row
    of the zero eigenvalue is zero), so that Σ_c p_c (∂ log p_c)² = |a_b ∂ log p_b|² = |a_b ∂z_b|²."""
    p = logp.detach().exp().double()
    evals, evecs = torch.linalg.eigh(torch.diag_embed(p) - p[:, :, None] * p[:, None, :])
    return (evals.clamp(min=0).sqrt()[:, :, None] * evecs.transpose(1, 2)).to(logp.dtype)


@contextmanager
def per_example_masks(adapter, batch_size: int, device):
    """mask_variables with one mask per example: all-ones head [B, layers, heads] and neuron
    [B, layers, ffn] masks that require grad, in the hooks, the model's parameters frozen meanwhile,
    and the hooks' MaskState (a forward over some of the examples sets their rows of the masks).
    Examples do not interact (before a Gram matrix), so the gradient with respect to example b's
    mask is b's own Jacobian row."""
    d = adapter.dims()
    hm = torch.ones(batch_size, d.num_layers, d.num_heads, device=device, requires_grad=True)
    nm = torch.ones(batch_size, d.num_layers, d.ffn_size, device=device, requires_grad=True)
    params = [p for p in adapter.model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        with mask_hooks(adapter) as state:
            state.heads, state.neurons = list(hm.unbind(1)), list(nm.unbind(1))
            yield hm, nm, state
    finally:
        for p in params:
            p.requires_grad_(True)


@register("optin-est", gradients=True)
def trajectory_estimate(adapter, batches, cfg, probes: int = PROBES):
    d = adapter.dims()
    L = d.num_layers
    dev = next(adapter.model.parameters()).device
    md_h = torch.zeros(L, d.num_heads, L, device=dev)   # [layer, unit, target layer z]
    md_n = torch.zeros(L, d.ffn_size, L, device=dev)
    kd_h = torch.zeros(L, d.num_heads, device=dev)
    kd_n = torch.zeros(L, d.ffn_size, device=dev)
    rows_gen = torch.Generator().manual_seed(cfg.seed)  # the exact method's token rows, in batch order
    rows = [layer_rows(adapter, b, cfg.rows_per_batch, rows_gen) for b in batches]
    mine = distributed.shard(range(len(batches)))  # all of them unless launched by torchrun
    with mask_variables(adapter) as (hm, nm):
        def accumulate(target, into_h, into_n, weight):
            # allow_unused: a model without attention (a CNN) never reads the [layers, 0] head mask
            gh, gn = torch.autograd.grad(target, [hm, nm], retain_graph=True, allow_unused=True,
                                         materialize_grads=True)
            into_h += weight * gh ** 2
            into_n += weight * gn ** 2

        bar = tqdm(total=len(mine) * probes * (L + 1), desc="trajectory estimate", unit="probe",
                   disable=not distributed.is_main())
        for bi in mine:
            probe_gen = torch.Generator().manual_seed(cfg.seed * 100_003 + bi + 1)  # same on any rank
            h, ctx = adapter.embed(batches[bi])
            grams = []
            for i in range(L):
                h = adapter.run_layer(i, h, ctx)
                grams.append(_gram(adapter.features(h), rows[bi][i]))
            logp = F.log_softmax(adapter.task.rows(adapter.head(h, ctx)).float(), -1)
            for z in range(L):
                w_md = 1.0 / (probes * grams[z].numel())  # rows may differ by layer (Swin stages)
                for _ in range(probes):
                    accumulate((_signs(grams[z].shape, probe_gen, dev) * grams[z]).sum(),
                               md_h[..., z], md_n[..., z], w_md)
                    bar.update()
            # KD: Σ_b Σ_c p_bc (∂ log p_bc)² from signed, sqrt(p)-weighted sums; ½ and batchmean
            sqrt_p = logp.detach().exp().sqrt()
            for _ in range(probes):
                accumulate((_signs(logp.shape, probe_gen, dev) * sqrt_p * logp).sum(), kd_h, kd_n,
                           0.5 / (probes * logp.shape[0]))
                bar.update()
        bar.close()
    distributed.reduce_sum(md_h, md_n, kd_h, kd_n)
    md_h, md_n, kd_h, kd_n = (x.cpu() for x in (md_h, md_n, kd_h, kd_n))
    n = len(batches)
    # the units each layer has, in (layer, unit) order: boolean indexing keeps row-major order
    ph, pn = d.present()
    units = [(i, "head", [u]) for i in range(L) for u in range(d.layer_heads[i])]
    units += [(i, "neurons", [u]) for i in range(L) for u in range(d.layer_ffn[i])]
    raw = {"md": torch.cat([md_h[ph], md_n[pn]]) / n,
           "kd": torch.cat([kd_h[ph], kd_n[pn]]) / n,
           "layer": torch.tensor([c[0] for c in units]), "kind": [c[1] for c in units],
           "units": [c[2] for c in units], "proxy": torch.ones(L, d.ffn_size), "dims": d}
    return rescore(raw, cfg.depth, cfg.lam, meta={"method": "optin-est", "probes": probes})
