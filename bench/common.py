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


def plot_accuracy(rows, dense, path, title, x="budget", xlabel="MACs kept (fraction of dense)"):
    """Accuracy (%, with 95% error bars) against MACs kept, one line per method, dense dashed.
    rows: dicts with "method", x, "accuracy", "ci95"; dense: {"accuracy", "n"}."""
    from optin.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    names = list(dict.fromkeys(r["method"] for r in rows))
    for i, name in enumerate(names):
        pts = [r for r in rows if r["method"] == name and x in r]
        dx = (i - (len(names) - 1) / 2) * 0.004  # small offsets so error bars do not hide each other
        ax.errorbar([p[x] + dx for p in pts], [100 * p["accuracy"] for p in pts],
                    yerr=[100 * p["ci95"] for p in pts], marker="o", ms=4, capsize=3, label=name)
    ax.axhline(100 * dense["accuracy"], color="gray", ls="--", label="dense")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"test accuracy % (n={dense['n']}, 95% CI)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
