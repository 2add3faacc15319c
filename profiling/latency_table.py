"""Latency tables: how one encoder block's attention and FFN cost grows with kept heads and neurons
on a given backend and shape, and the linear latency model fitted to them.

The blocks are generic (q/k/v/out projections with k heads; Linear-GELU-Linear with m neurons),
built from the dimensions alone, so this knows no model family and no pruning method. The fit
    latency(h heads, m neurons) ≈ a0 + a·h + f0 + b·m   per layer
gives the per-unit costs the mask search spends (profiling.macs.CostModel, in milliseconds).
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import torch
from torch import nn

from .macs import CostModel


class _Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, head_dim: int):
        super().__init__()
        w = heads * head_dim
        self.q, self.k, self.v = nn.Linear(hidden, w), nn.Linear(hidden, w), nn.Linear(hidden, w)
        self.o = nn.Linear(w, hidden)
        self.head_dim = head_dim

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = (t(x).view(b, n, -1, self.head_dim).transpose(1, 2) for t in (self.q, self.k, self.v))
        a = torch.softmax(q @ k.transpose(-1, -2) / self.head_dim ** 0.5, -1) @ v
        return self.o(a.transpose(1, 2).reshape(b, n, -1)) + x


class _FFN(nn.Module):
    def __init__(self, hidden: int, neurons: int):
        super().__init__()
        self.i, self.o = nn.Linear(hidden, neurons), nn.Linear(neurons, hidden)

    def forward(self, x):
        return self.o(torch.nn.functional.gelu(self.i(x))) + x


def _time_onnx(module, x, iters: int, warmup: int, threads: int | None) -> float:
    from export.engines.ort import make_session

    from .latency import measure

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "block.onnx")
        torch.onnx.export(module.eval(), (x,), path, input_names=["x"], output_names=["y"], opset_version=17,
                          dynamo=False)
        sess = make_session(path, "cpu", "all", threads)

        class _Runner:
            def bind(self, inputs):
                self.feed = {"x": inputs["input_ids"].numpy()}

            def run(self):
                sess.run(None, self.feed)

        return measure(_Runner(), {"input_ids": x}, iters=iters, warmup=warmup)["latency_ms"]["median"]


def block_table(hidden: int, head_dim: int, num_heads: int, ffn_size: int, batch: int, seq: int,
                iters: int = 50, warmup: int = 5, threads: int | None = None, points: int = 4,
                keys: int | None = None) -> dict:
    """Median ms of one attention block with h heads and one FFN with m neurons (ONNX Runtime CPU).
    keys: tokens per attention window (Swin): attention then runs on seq / keys windows of that
    many tokens per example, as the model does; None: over the whole sequence."""
    torch.manual_seed(0)
    x = torch.randn(batch, seq, hidden)
    # windows fold into the batch dimension; the token count rounds up to whole windows (padding)
    xa = x if keys is None else torch.randn(batch * -(-seq // keys), keys, hidden)
    heads = sorted({max(1, round(num_heads * f / points)) for f in range(1, points + 1)})
    neurons = sorted({max(1, round(ffn_size * f / points)) for f in range(1, points + 1)})
    with torch.no_grad():
        att = {h: _time_onnx(_Attention(hidden, h, head_dim), xa, iters, warmup, threads) for h in heads}
        ffn = {m: _time_onnx(_FFN(hidden, m), x, iters, warmup, threads) for m in neurons}
    return {"batch": batch, "seq": seq, "attention_ms": att, "ffn_ms": ffn, "backend": "onnxruntime-cpu"}


def _fit(table: dict) -> tuple[float, float]:
    """Least-squares line through (units, ms); returns (intercept, slope), slope clamped > 0."""
    x = np.array(list(table.keys()), dtype=float)
    y = np.array(list(table.values()), dtype=float)
    slope, icpt = np.polyfit(x, y, 1) if len(x) > 1 else (y[0] / x[0], 0.0)
    return float(icpt), float(max(slope, 1e-9))


def latency_cost_model(table, num_layers: int | None = None, fixed_ms: float = 0.0) -> CostModel:
    """Per-example milliseconds: the block intercepts go into `fixed`, slopes become unit costs.
    table: one block table for all num_layers layers, or a list of one table per layer where
    layer widths differ (Swin stages; layers of one width share one table object)."""
    tables = [table] * num_layers if isinstance(table, dict) else list(table)
    per_head, per_neuron = [], []
    fixed = fixed_ms / float(tables[0]["batch"])
    fits = {}
    for t in tables:
        if id(t) not in fits:
            fits[id(t)] = (_fit(t["attention_ms"]), _fit(t["ffn_ms"]), float(t["batch"]))
        (_, a), (_, b), per = fits[id(t)]
        per_head.append(a / per)
        per_neuron.append(b / per)
    for key in fits:  # block intercepts, once per layer of each width
        (a0, _), (f0, _), per = fits[key]
        fixed += sum(id(t) == key for t in tables) * max(a0 + f0, 0.0) / per
    return CostModel(tuple(per_head), tuple(per_neuron), fixed=fixed, seq_len=max(t["seq"] for t in tables))
