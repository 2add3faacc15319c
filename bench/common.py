"""Shared pieces of the benchmarks: the zoo model, cached scores, masked evaluation."""
from __future__ import annotations

import os
import random
import sys
import time

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
# The data each zoo model was trained on and is pruned with in the benchmarks.
ZOO_DATA = {"minilm-rt": "rotten-tomatoes", "mpnet-rt": "rotten-tomatoes", "vit-fmnist": "fashion-mnist",
            "resnet-fmnist": "fashion-mnist", "lite0-fmnist": "fashion-mnist", "swin-fmnist-seg": "fmnist-seg"}


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
    t0 = time.time()
    s = get_method(method)(adapter, calib, cfg)
    s.meta["seconds"] = time.time() - t0
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


def plot_accuracy(rows, dense, path, title, x="budget", xlabel="MACs kept (fraction of dense)",
                  ylabel="test accuracy %"):
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
    ax.set_ylabel(f"{ylabel} (n={dense['n']}, 95% CI)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- ONNX Runtime speed of a pruned folder against dense (speed_methods.py, speed_tp.py) ---------
SPEED_BATCH = 8    # batch 8 × SEQ real tokens, the deployment shape of every speed table
SPEED_THREADS = 2  # ONNX Runtime intra-op threads, no spinning (export.engines.EngineConfig)
QUIET = lambda *_: None  # noqa: E731


def method_model(S, name, budget, align=1):
    """Our method `name`'s mask at `budget` (cached scores on S's calibration set), physically
    narrowed on a copy of S's model: (model, spec)."""
    import copy

    from optin.narrow import narrow
    from optin.spec import PruneSpec

    ad = S["adapter"]
    scores = scores_cached(ad, S["calib"], name, ScoreConfig(), {"optin": "g32-c128"}.get(name, "c128"))
    r = mask_for(ad, scores, budget, align)
    spec = PruneSpec.from_masks(S["model"].config.model_type, r.head_mask, r.neuron_mask)
    m = copy.deepcopy(S["model"])
    narrow(adapter_for(m), spec)
    return m, spec


def save_for_export(model, tok, spec, out_dir):
    """The pruned folder (narrowed weights, spec.json, tokenizer, optin.json) that export_onnx,
    open_pair and model_macs read; load_pruned rebuilds it as narrow(skeleton, spec) + these weights."""
    from optin.io import save_pruned

    save_pruned(model, tok, spec, out_dir, extra={"seq_len": SEQ, "max_length": SEQ,
                                                  "source": resolve_model("minilm-rt"), "data": "rotten-tomatoes"})


def time_vs_dense(model_dir, iters, against="minilm-rt", batch=SPEED_BATCH, seq=SEQ):
    """Export `model_dir` with parity, then time it against the dense model, interleaved, with ONNX
    Runtime CPU (SPEED_THREADS threads, batch × seq real tokens or images, 20 warm-up pairs).
    `against`: a zoo name (the dense model is exported into model_dir/dense) or a folder already
    exported (the dense_dir returned by an earlier call, to export dense once).
    Returns (row fields, dense_dir)."""
    from export.engines import EngineConfig
    from export.onnx import export_onnx
    from export.samples import fixed_inputs
    from profiling.latency import ProfileConfig, compare, model_macs, open_pair

    exp = export_onnx(model_dir, log=QUIET)
    pair = open_pair(model_dir, ProfileConfig(batch=batch, seq=seq, iters=iters, against=against,
                                              engine=EngineConfig(threads=SPEED_THREADS)), log=QUIET)
    inputs, _ = fixed_inputs(pair.loaded, batch, seq)
    c = compare(pair.dense, pair.target, inputs, iters=iters, warmup=20)
    dense_macs, _ = model_macs(pair.dense_dir, seq)
    pruned_macs, _ = model_macs(model_dir, seq)
    row = {"mac_ratio": pruned_macs / dense_macs, "mac_implied": dense_macs / pruned_macs, "speedup": c["speedup"],
           "dense_ms": c["a"]["latency_ms"]["median"], "pruned_ms": c["b"]["latency_ms"]["median"],
           "cv": [c["a"]["cv"], c["b"]["cv"]], "parity": exp["parity"]["max_abs_diff"]}
    return row, pair.dense_dir


def plot_speed(rows, path, title=None, ref_rows=()):
    """Measured speedup against MACs kept, one line per method (ref_rows dotted), 1 / ratio dashed."""
    from optin.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for rs, style in ((rows, "-"), (ref_rows, ":")):
        for name in dict.fromkeys(r["method"] for r in rs):
            pts = [r for r in rs if r["method"] == name]
            ax.plot([p["mac_ratio"] for p in pts], [p["speedup"] for p in pts], marker="o", ls=style, label=name)
    xs = sorted({r["mac_ratio"] for r in list(rows) + list(ref_rows)})
    ax.plot(xs, [1 / x for x in xs], color="gray", ls="--", label="MAC-implied (1 / ratio)")
    ax.set_xlabel("MACs kept (fraction of dense)")
    ax.set_ylabel(f"speedup over dense (ORT CPU, b{SPEED_BATCH} × s{SEQ}, interleaved)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def mcnemar(a_correct, b_correct) -> dict:
    """Exact McNemar test of two classifiers on the same examples (two-sided binomial on the
    discordant pairs): {"a_only", "b_only", "p"}."""
    from math import comb

    b = sum(1 for x, y in zip(a_correct, b_correct) if x and not y)
    c = sum(1 for x, y in zip(a_correct, b_correct) if y and not x)
    n, k = b + c, min(b, c)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n)
    return {"a_only": b, "b_only": c, "p": p}


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman rank correlation (ties broken by position)."""
    rx, ry = (t.argsort().argsort().double() for t in (x.flatten(), y.flatten()))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / (rx.norm() * ry.norm()))


def correlations(a, b) -> dict:
    """Spearman of two Scores over all heads and neurons, heads alone, neurons alone."""
    fa, fb = (torch.cat([s.heads.flatten(), s.neurons.flatten()]) for s in (a, b))
    return {"all": spearman(fa, fb), "heads": spearman(a.heads, b.heads), "neurons": spearman(a.neurons, b.neurons)}


def ort_session(path: str, threads: int, profile_prefix: str | None = None):
    """An ONNX Runtime CPU session as the benchmarks time it: `threads` intra-op threads, no
    spinning (spinning threads steal the other graph's time in an interleaved run)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def interleaved_ms(sessions: dict, feeds: dict, iters: int) -> dict:
    """Median milliseconds of each session's run over `iters` rounds, the sessions taking turns
    within each round (every graph sees the same load)."""
    import numpy as np

    times = {k: [] for k in sessions}
    for _ in range(iters):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds)
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) * 1000 for k, v in times.items()}
