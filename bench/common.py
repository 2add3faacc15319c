"""Shared pieces of the benchmarks: the zoo model, cached scores, masked evaluation."""
from __future__ import annotations

import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from optin.adapters import adapter_for  # noqa: E402
from optin.data import encode_labels, make_batches, rotten_tomatoes  # noqa: E402
from optin.evaluate import accuracy  # noqa: E402
from optin.importance import ScoreConfig, get_method  # noqa: E402
from optin.io import load_model  # noqa: E402
from optin.masking import mask_hooks  # noqa: E402
from optin.prune import cost_model_for  # noqa: E402
from optin.search import search  # noqa: E402
from optin.zoo import resolve_model  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SEQ = 64


def setup(calib=128, dev=0, test=True):
    """minilm-rt, calibration batches, optional dev batches (a seeded sample of the *train*
    split, for choosing settings without touching test) and the test batches."""
    torch.set_num_threads(2)
    model, tok = load_model(resolve_model("minilm-rt"))
    ds = rotten_tomatoes()
    cal = make_batches(tok, ds.split("calib")[:calib], 32, SEQ)
    out = {"model": model, "tok": tok, "adapter": adapter_for(model), "calib": cal}
    if dev:
        tr = ds.split("train")
        out["dev"] = make_batches(tok, random.Random(1).sample(tr, dev), 64, SEQ)
    if test:
        out["test"] = make_batches(tok, ds.split("test"), 64, SEQ)
    return out


def scores_cached(adapter, calib, method, cfg: ScoreConfig, tag: str):
    path = os.path.join(RESULTS, "..", "..", "runs", "cache", f"{method}-{tag}.pt")
    if os.path.exists(path):
        return torch.load(path, weights_only=False)
    s = get_method(method)(adapter, calib, cfg)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(s, path)
    return s


def masked_accuracy(model, adapter, batches, head_mask, neuron_mask):
    with mask_hooks(adapter) as state:
        state.set(head_mask, neuron_mask)
        return accuracy(model, batches)


def mask_for(adapter, scores, budget, align=1):
    cm = cost_model_for(adapter, SEQ)
    d = adapter.dims()
    dense = cm.total([d.num_heads] * d.num_layers, [d.ffn_size] * d.num_layers)
    return search(scores.heads, scores.neurons, cm, budget * dense, align)
