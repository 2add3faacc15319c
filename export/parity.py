"""Parity of a deployed artifact (ONNX file, engine) against the PyTorch model it came from.

Generic: `run(batch) -> {output name: array}` is any backend. Every output is compared on every
batch; all mismatches are collected before one ParityError with a per-output line is raised.
Parity fails hard by default: a deployed model that disagrees with its source is a bug. An INT8
engine's logits move by design, so by default it is held to argmax agreement alone (no max-abs
bound; non-finite outputs still fail), and judged on the task (export.accuracy).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from optin.errors import ParityError

TOL = 1e-4
MIN_AGREEMENT = 0.999


@dataclass(frozen=True)
class Tolerance:
    atol: float | None = TOL               # None: no max-abs bound, agreement alone (INT8's default)
    min_agreement: float = MIN_AGREEMENT   # fraction of predictions (samples, or pixels) whose argmax matches
    rtol: float = 0.0   # plus rtol x the output's largest |value|: float16 error grows with the logits' scale

    def bound(self, scale: float) -> float:
        return float("inf") if self.atol is None else self.atol + self.rtol * scale


def reference(model, batches) -> list[dict]:
    with torch.inference_mode():
        return [{"logits": model(**b).logits.float().numpy()} for b in batches]


def measure_parity(ref: list[dict], run, batches) -> dict:
    """{"max_abs_diff", "agreement", "samples", "outputs": {name: max diff}} over all batches."""
    diffs: dict[str, float] = {}
    scale: dict[str, float] = {}
    agree = preds = total = 0
    for want, b in zip(ref, batches):
        got = run(b)
        for name, w in want.items():
            g = np.asarray(got[name], dtype=np.float32)
            if g.shape != w.shape:
                raise ParityError(f"output {name!r} has shape {g.shape}, the PyTorch model gives {w.shape}")
            d = float(np.max(np.abs(g - w))) if w.size else 0.0
            diffs[name] = max(diffs.get(name, 0.0), d if np.isfinite(d) else float("inf"))
            scale[name] = max(scale.get(name, 0.0), float(np.abs(w).max()) if w.size else 0.0)
        # classes are axis 1 of [B, C] and of a segmenter's [B, C, H, W]: one prediction per pixel there
        w = want["logits"]
        agree += int((np.asarray(got["logits"]).argmax(1) == w.argmax(1)).sum())
        preds += w.size // max(w.shape[1], 1)
        total += len(w)
    return {"max_abs_diff": max(diffs.values()), "agreement": agree / max(preds, 1), "samples": total,
            "outputs": diffs, "scale": scale}


def _over(name: str, diff: float, tol: Tolerance, scale: float) -> str:
    if tol.atol is None:  # no max-abs bound: only a non-finite output gets here
        return f"{name} max_abs_diff {diff:.2e} (not finite)"
    s = f"{name} max_abs_diff {diff:.2e} > tol {tol.bound(scale):.0e}"
    return s + (f" ({tol.atol:g} + {tol.rtol:g} x max |logit| {scale:.2f})" if tol.rtol else "")


def check(parity: dict, tol: Tolerance, what: str) -> None:
    """Raise one ParityError line listing every output's max diff against its tolerance."""
    scale = parity.get("scale", {})
    bad = [_over(k, v, tol, scale.get(k, 0.0)) for k, v in parity["outputs"].items()
           if not (np.isfinite(v) and v <= tol.bound(scale.get(k, 0.0)))]
    if parity["agreement"] < tol.min_agreement:
        bad.append(f"argmax agreement {parity['agreement']:.4f} < {tol.min_agreement}")
    if bad:
        raise ParityError(f"{what} disagrees with the PyTorch model on {parity['samples']} samples: "
                          + "; ".join(bad))


def verify(loaded, run, what: str, tol: Tolerance = Tolerance(), samples: int = 64, data: str | None = None,
           shape_limits=None) -> dict:
    """Parity of `run` against `loaded.model` on real calibration samples (random tokens if the
    data cannot be loaded, said in "source"); raises ParityError beyond `tol`.
    shape_limits ((min batch, min seq), (max batch, max seq)) keeps batches inside an engine's profile."""
    from .samples import parity_batches

    batches, source = parity_batches(loaded, n=samples, data=data, limits=shape_limits)
    parity = measure_parity(reference(loaded.model, batches), run, batches)
    parity["source"] = source
    parity["tolerance"] = {"atol": tol.atol, "min_agreement": tol.min_agreement} | ({"rtol": tol.rtol} if tol.rtol else {})
    check(parity, tol, what)
    return parity
