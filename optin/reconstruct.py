"""Closed-form re-fit of the weights that read the kept units, after narrowing.

After a block loses heads, neurons or channels, the module that reads what is left (the
attention output projection over the kept heads, the FFN output over the kept neurons, a CNN
block's consumer conv over the kept channels; `Adapter.sublayers`) is re-solved, bias
included, by damped least squares on calibration data, so that the narrowed block reproduces
the dense one (the idea of K-prune, ICLR 2024, §4.3, and of CORP's ridge compensation; no
gradient step):

    min_W ‖[X 1] Wᵀ − T‖² + λ ‖W − W₀‖²,   λ = damp · mean diag(XᵀX),

with X the consumer's inputs in the *pruned* model (earlier blocks already re-fit, so their
drift is compensated here) and T its target: its own output plus what the residual sum still
misses, z + (dense sum − pruned sum) / scale (`Sublayer`), which makes the block's sum equal
to the dense model's whatever the family does around it. Blocks are solved bottom to top,
sublayers in forward order. Gram matrices are float64 sums over batches, so memory is bounded
by the kept width, never by the data; they live on the model's device when it has float64 (CUDA),
else on the CPU (optin.devices.gram_device), and the forward passes run in float32. A fit's pass
runs its block only as far as the fit reads, and a sublayer's producers (q, k, v) share one
pass and, reading the same rows, one Gram. Damping towards W₀ (not towards 0) means the
solution can only lower each sublayer's calibration error below what narrowing left: the fitted
objective at W₀ is the error before, and the minimiser's is no larger.

A sublayer that kept nothing (BiasOnly, ConstantBranch) has only its bias left: it becomes the
mean target. With token reduction each block is solved on the tokens it keeps (the dense sums
are gathered at those positions).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm

from .channels import ops
from .devices import gram_device, model_device
from .errors import BadInput


@dataclass(frozen=True)
class ReconConfig:
    damp: float = 1e-2   # ridge weight towards the current weights, relative to the Gram's mean diagonal
    calib: int = 512     # calibration examples (bench/recon.py: chosen on dev data)
    producers: bool = True  # also re-fit the modules that make the kept units (q/k/v, FFN input, CNN conv1)

    def check(self) -> None:
        if self.damp < 0:
            raise BadInput(f"--recon-damp must be ≥ 0, got {self.damp}")
        if self.calib < 1:
            raise BadInput(f"--recon-calib must be positive, got {self.calib}")


# --- taps ------------------------------------------------------------------------------------
class _Enough(Exception):
    """Raised by the last tap of a pass that needs only part of a layer: the rest is not run."""


@contextmanager
def _taps(points, stop: bool = False):
    """points: {key: (module, "input" | "output")}. Yields a dict filled on every forward with a
    copy of the first input or output (copies: a ResNet adds the shortcut into its branch output
    in place). A tensor tapped twice unchanged (q, k, v read the same hidden states) gets one copy,
    so the fits can see that their inputs are the same. stop: once every point is filled, raise
    _Enough (`_tapped` runs such a pass)."""
    got, handles, copies, seen = {}, [], {}, set()

    def keep(key, v):
        if key in seen:  # a point tapped again: a new pass
            copies.clear(), seen.clear()
        seen.add(key)
        v = v[0] if isinstance(v, (tuple, list)) else v
        # the source is held, so its id is not reused within the pass; _version: written in place since
        src, c = copies.get((id(v), v._version), (None, None))
        if src is not v:
            c = v.detach().clone()
            copies[id(v), v._version] = (v, c)
        got[key] = c
        if stop and len(got) == len(points):
            raise _Enough

    try:
        for key, (m, at) in points.items():
            if at == "input":
                handles.append(m.register_forward_pre_hook(lambda mod, args, key=key: keep(key, args)))
            else:
                handles.append(m.register_forward_hook(lambda mod, args, out, key=key: keep(key, out)))
        yield got
    finally:
        for h in handles:
            h.remove()


def _tapped(adapter, i, h, ctx, got) -> None:
    """Run layer i only as far as the taps of a `_taps(..., stop=True)` need: a fit reads its
    sublayer's inputs and outputs (and the sum after it), never what comes later in the block.
    The hooks are stateless, so stopping midway leaves nothing half-set."""
    got.clear()
    try:
        adapter.run_layer(i, h, ctx)
    except _Enough:
        pass


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """Feature maps [B, C, H, W] → [B, H·W, C]; token tensors stay [B, n, C]."""
    return t.flatten(2).transpose(1, 2) if t.dim() == 4 else t


def _rows(t: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """[B, n, C] → [real rows, C]: padding tokens would pull the fit towards garbage."""
    if t.dim() == 3 and valid is not None and tuple(t.shape[:2]) == tuple(valid.shape):
        return t[valid.to(t.device)]  # an image family's mask is made on the CPU
    return t.reshape(-1, t.shape[-1])


def _is_standin(m) -> bool:
    """A sublayer that kept nothing: a bias and no weight (BiasOnly, ConstantBranch)."""
    return getattr(m, "weight", None) is None and isinstance(getattr(m, "bias", None), torch.nn.Parameter)


# --- one sublayer's normal equations ----------------------------------------------------------
class _Normal:
    """Σ over calibration rows of [x 1]ᵀ[x 1], [x 1]ᵀ t and tᵀt (float64); rows weighted by
    scale² per output when the error is reported (the sum's units)."""

    def __init__(self, k: int, out: int, bias: bool, weight: torch.Tensor | None = None, device=None):
        self.bias = bias
        dev = torch.device("cpu") if device is None else device
        # scale² per output
        self.weight = torch.ones(out, dtype=torch.float64, device=dev) if weight is None else weight.to(dev)
        n = k + int(bias)
        self.g = torch.zeros(n, n, dtype=torch.float64, device=dev)
        self.c = torch.zeros(n, out, dtype=torch.float64, device=dev)
        self.tt = torch.zeros(out, dtype=torch.float64, device=dev)
        self.ts = torch.zeros(out, dtype=torch.float64, device=dev)
        self.rows = 0

    def add(self, x: torch.Tensor | None, t: torch.Tensor, memo: dict | None = None) -> None:
        """memo: one dict for the equations fed the same rows in one batch (q, k, v), so the rows
        are widened and their Gram formed once, by the first of them."""
        t = t.to(self.g.device).double()  # copied before widening: half the bytes cross the bus
        if memo:
            x, xx = memo["x"], memo["xx"]
        else:
            if x is None:
                x = t.new_zeros(t.shape[0], 0)
            x = x.to(self.g.device).double()
            if self.bias:
                x = torch.cat([x, x.new_ones(x.shape[0], 1)], 1)
            xx = x.T @ x
            if memo is not None:
                memo.update(x=x, xx=xx)
        self.g += xx
        self.c += x.T @ t
        self.tt += (t * t).sum(0)
        self.ts += t.sum(0)
        self.rows += t.shape[0]

    def error(self, w: torch.Tensor, weight: torch.Tensor) -> float:
        """‖[X 1] wᵀ − T‖², each output's squared error times `weight` (scale²); w: [out, k (+1)]."""
        w = w.to(self.g.device).double()
        per = ((w @ self.g) * w).sum(1) - 2 * (w * self.c.T).sum(1) + self.tt
        return float((per.clamp(min=0) * weight).sum())

    def target_variance(self, weight: torch.Tensor) -> float:
        """Σ ‖t − mean t‖² (weighted): what a constant cannot fit. Relative errors are fractions
        of it (1 − R²), which a constant moved between the bias and a BatchNorm's β leaves alone."""
        return float(((self.tt - self.ts ** 2 / max(self.rows, 1)).clamp(min=0) * weight).sum())

    def solve(self, w0: torch.Tensor, damp: float, live_only: bool = False) -> torch.Tensor:
        """argmin ‖[X 1] wᵀ − T‖² + λ‖w − w0‖², λ = damp · mean diag of the X part (the bias
        column's diagonal is the row count, a different unit); live_only: the mean over inputs
        that are ever non-zero (masked units' inputs are zero: λ then is what narrowing gives)."""
        w0 = w0.to(self.g.device).double()
        k = self.g.shape[0] - int(self.bias)
        diag = self.g.diagonal()[:k] if k else self.g.diagonal()
        if live_only:
            diag = diag[diag > 0]
        lam = damp * float(diag.mean()) if diag.numel() else 0.0
        lam = max(lam, 1e-12 * max(float(self.g.diagonal().max()), 1.0))  # singular Gram (dead inputs)
        a = self.g + lam * torch.eye(self.g.shape[0], dtype=torch.float64, device=self.g.device)
        return torch.linalg.solve(a, self.c + lam * w0.T).T


# --- the walk ----------------------------------------------------------------------------------
def _weights(site) -> tuple[torch.Tensor, bool]:
    """The consumer's current [W b] as one matrix, and whether it has a bias column."""
    m = site.consumer
    if _is_standin(m):
        return m.bias.detach().reshape(-1, 1), True
    w = ops(m).matrix(m)
    if m.bias is not None:
        return torch.cat([w, m.bias.detach()[:, None]], 1), True
    if site.bias_into is not None:
        return torch.cat([w, w.new_zeros(w.shape[0], 1)], 1), True
    return w, False


@torch.no_grad()
def _write(site, w: torch.Tensor, has_bias: bool) -> None:
    m = site.consumer
    if _is_standin(m):
        m.bias.data.copy_(w[:, -1].reshape(m.bias.shape).to(m.bias))
        return
    cols = w[:, :-1] if has_bias else w
    ops(m).set_matrix(m, cols.to(m.weight))
    if not has_bias:
        return
    b = w[:, -1]
    if m.bias is not None:
        m.bias.data.copy_(b.to(m.bias))
    else:  # bias-free conv before a BatchNorm: BN(z + b) = a·z + (β + a·b) + ...
        bn = site.bias_into
        a = bn.running_var.add(bn.eps).rsqrt() * (bn.weight if bn.affine else 1.0)
        bn.bias.data.add_((a * b.to(a)).to(bn.bias))


def _scale(site, out: int, device=None) -> torch.Tensor:
    """Per-output scale between the consumer and the sum, kept away from 0 (a dead channel)."""
    if site.scale is None:
        return torch.ones(out, dtype=torch.float64, device=device)
    s = site.scale.double().reshape(-1)
    floor = 1e-6 * float(s.abs().max().clamp(min=1e-30))
    return torch.where(s.abs() >= floor, s, torch.where(s >= 0, floor, -floor).to(s))


def _layout(site, t: torch.Tensor) -> torch.Tensor:
    t = _channels_last(t)
    return site.rows(t) if site.rows is not None else t


@torch.no_grad()
def reconstruct(dense, pruned, batches, spec, cfg: ReconConfig = ReconConfig(), desc: str = "reconstruct",
                blocks: range | None = None) -> dict:
    """Re-fit `pruned.model` (an adapter over the narrowed model) towards `dense` (an adapter over
    the dense model it came from) on `batches`, in place. Returns what the report keeps: per
    block and sublayer the relative calibration error before and after, rows, seconds.

    spec None: `pruned` is at dense widths with its removed units masked (optin.masking hooks,
    installed before this call; optin.iterative), so every output of a producer is fit. blocks:
    re-fit only these (the blocks below them are run, not fit)."""
    cfg.check()
    t0 = time.time()
    L = len(pruned.layers())
    if len(dense.layers()) != L:
        raise BadInput("reconstruction needs the dense model the pruned one was narrowed from")
    modes = [(m, m.training) for m in (dense.model, pruned.model)]
    for m, _ in modes:
        m.eval()
    try:
        dense_h, pruned_h, ctxs_d, ctxs_p = [], [], [], []
        for b in batches:
            h, c = dense.embed(b)
            dense_h.append(h), ctxs_d.append(c)
            h, c = pruned.embed(b)
            pruned_h.append(h), ctxs_p.append(c)
        blocks = range(L) if blocks is None else blocks
        for i in range(blocks.start):  # inputs of the first re-fit block, in both models
            for b in range(len(batches)):
                dense_h[b] = dense.run_layer(i, dense_h[b], ctxs_d[b])
                pruned_h[b] = pruned.run_layer(i, pruned_h[b], ctxs_p[b])
        layers = []
        for i in tqdm(blocks, desc=desc, unit="block", disable=len(blocks) < 2):
            layers.append(_block(dense, pruned, i, batches, dense_h, pruned_h, ctxs_d, ctxs_p, spec, cfg))
    finally:
        for m, mode in modes:
            m.train(mode)
    return {"damp": cfg.damp, "examples": sum(len(next(iter(b.values()))) for b in batches), "layers": layers,
            "gram": {"dtype": "float64", "device": str(gram_device(model_device(pruned.model)))},
            "seconds": time.time() - t0}


def _positions(spec, i):
    return None if spec is None or spec.tokens is None else torch.tensor(spec.tokens[i])


def _block(dense, pruned, i, batches, dense_h, pruned_h, ctxs_d, ctxs_p, spec, cfg) -> list[dict]:
    d_sites, p_sites = dense.sublayers(i), pruned.sublayers(i, spec)
    if len(d_sites) != len(p_sites):
        raise BadInput(f"block {i}: the dense and pruned models describe different sublayers")
    pos = _positions(spec, i)
    # what each sublayer is fit towards, from the dense model: the sum it ends in (a residual sum,
    # or the BatchNorm after an inner conv), else the dense consumer's own output; with producers,
    # theirs too; all at dense widths (an inner one is compared at the outputs it keeps)
    points, of = {}, {}
    for k, d in enumerate(d_sites):
        for key, s in [(k, d)] + [((k, j), q) for j, q in enumerate(d.producers if cfg.producers else ())]:
            points[key], of[key] = ((s.consumer, "output") if s.total is None else (s.total, s.total_at)), s
    targets = []
    with _taps(points) as got:
        for b in range(len(batches)):
            dense_h[b] = dense.run_layer(i, dense_h[b], ctxs_d[b])
            t = {}
            for key in points:  # sums in the sum's layout; consumers' outputs in their own
                v = _channels_last(got[key]) if of[key].total is not None else _layout(of[key], got[key])
                t[key] = v if pos is None else v[:, pos]
            targets.append(t)
    valid = [_valid(pruned, b, i, pos) for b in batches]
    out = []
    for k, site in enumerate(p_sites):
        if cfg.producers and not _is_standin(site.consumer):
            cols = None if spec is None else _columns(pruned, i, site.reads, _spec_kept(spec, i, site.reads))
            qs = [replace(q, keep_out=cols if q.keep_out is None else q.keep_out) for q in site.producers]
            # a site's producers make its units side by side (none reads another's output, and their
            # targets are the dense model's), so one pass feeds all their fits: q, k, v together
            rows = _fit(pruned, i, qs, batches, pruned_h, ctxs_p, [_at(targets, (k, j), q) for j, q in enumerate(qs)],
                        valid, cfg, spec is None)
            out += [{**row, "sublayer": k, "producer": j} for j, row in enumerate(rows)]
        row, = _fit(pruned, i, [site], batches, pruned_h, ctxs_p, [_at(targets, k, site)], valid, cfg, spec is None)
        out.append({**row, "sublayer": k, "producer": None})
    for b in range(len(batches)):
        pruned_h[b] = pruned.run_layer(i, pruned_h[b], ctxs_p[b])
    return out


def _at(targets, key, site) -> list:
    """The targets of one (sub)layer per batch; an inner one at the dense outputs it keeps."""
    if site.keep_out is not None:
        return [t[key][..., site.keep_out] for t in targets]
    return [t[key] for t in targets]


def _spec_kept(spec, i, reads):
    return list(spec.heads[i]) if reads == "heads" else list(spec.neurons[i])


def _columns(adapter, i, reads, units) -> torch.Tensor | None:
    """Output columns of a producer that make the kept units: each kept head's head_dim columns."""
    if reads == "heads":
        hd = adapter.dims().layer_head_dim[i]
        return torch.tensor([h * hd + c for h in units for c in range(hd)])
    return torch.tensor(units) if reads == "neurons" else None


def _valid(adapter, batch, i, pos):
    v = adapter.valid_tokens(batch, i)
    return v if pos is None else v[:, pos]


def _accumulate(pruned, i, sites, batches, pruned_h, ctxs_p, targets, valid):
    """The normal equations of sublayers that one forward pass can feed (`sites`, their `targets`
    per batch), over the batches of the pruned model, each layer run only as far as they need;
    per site its equations, current weights [W b] and whether it has a bias column."""
    eqs, w0s, biases, scales, points = [], [], [], [], {}
    for n, site in enumerate(sites):
        w0, has_bias = _weights(site)
        standin = _is_standin(site.consumer)
        scale = _scale(site, w0.shape[0], w0.device).to(w0.device)  # divides targets on the model's device
        eqs.append(_Normal(0 if standin else w0.shape[1] - int(has_bias), w0.shape[0], has_bias, scale ** 2,
                           gram_device(w0.device)))
        w0s.append(w0), biases.append(has_bias), scales.append(scale)
        points[n, "z"] = (site.consumer, "output")
        if not standin:
            points[n, "x"] = (site.consumer, "input")
        if site.total is not None:
            points[n, "s"] = (site.total, site.total_at)
    with _taps(points, stop=True) as got:
        for j in range(len(batches)):
            _tapped(pruned, i, pruned_h[j], ctxs_p[j], got)
            shared = {}
            for n, site in enumerate(sites):
                z = _layout(site, got[n, "z"])
                if site.total is None:
                    t = targets[n][j]
                else:  # what the sum misses, in the consumer's units
                    t = z.double() + (targets[n][j].double() - _channels_last(got[n, "s"]).double()) / scales[n]
                raw, memo = got.get((n, "x")), None
                x = None if raw is None else ops(site.consumer).design(site.consumer, raw)
                if x is not None and x is raw:  # the same tapped tensor, laid out the same way: same rows
                    memo = shared.setdefault((id(raw), id(site.rows), eqs[n].bias), {})
                x = None if x is None else _layout(site, x)
                eqs[n].add(None if x is None else _rows(x, valid[j]), _rows(t, valid[j]), memo)
    return list(zip(eqs, w0s, biases))


def _fit(pruned, i, sites, batches, pruned_h, ctxs_p, targets, valid, cfg, masked: bool = False) -> list[dict]:
    """Accumulate the sites' normal equations in one pass over the batches, solve, write; per site
    its errors before and after."""
    rows = []
    for site, (eq, w0, has_bias) in zip(sites, _accumulate(pruned, i, sites, batches, pruned_h, ctxs_p, targets,
                                                           valid)):
        standin = _is_standin(site.consumer)
        weight = eq.weight
        norm = max(eq.target_variance(weight), 1e-30)
        before = eq.error(w0, weight) / norm
        w = eq.solve(w0, 0.0 if standin else cfg.damp, live_only=masked)
        after = eq.error(w, weight) / norm
        if after > before:  # rounding in a near-singular solve: keep what narrowing left
            w, after = w0.double(), before
        _write(site, w, has_bias)
        rows.append({"layer": i, "kind": "bias" if standin else type(site.consumer).__name__,
                     "inputs": eq.g.shape[0] - int(has_bias), "rows": eq.rows, "before": before, "after": after})
    return rows
