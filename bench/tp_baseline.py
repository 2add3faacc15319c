"""Baseline: Torch-Pruning's own structural pruner on minilm-rt, no fine-tuning, matched to our MACs.

    pip install --no-deps torch-pruning==1.6.1        # the `bench` extra in pyproject.toml; --no-deps keeps torch
    python bench/tp_baseline.py [--quick] [--methods magnitude,taylor] [--budgets 0.4,0.5]

Torch-Pruning (TP) prunes whole attention heads (num_heads={q,k,v: 12}, prune_num_heads=True,
prune_head_dims=False, as in its Hugging Face BERT example) and FFN intermediate channels, with
global ranking (global_pruning=True) and one ratio r used for both its channel ratio and its head
ratio. The hidden width is kept: the embeddings, every LayerNorm, the pooler and the classifier are
ignored layers, so the residual-stream group is never pruned. Importance: (a) GroupMagnitudeImportance
(p=2, TP's defaults: mean over the group, each group normalised by its mean), (b) GroupTaylorImportance
(|w·∂L/∂w|, same defaults), gradients of the labelled cross-entropy over the 128 calibration snippets
(eval mode, no dropout). For each budget, r is chosen by bisection so that OUR analytic MAC count
(optin.prune.cost_model_for(adapter, 64), kept heads = q.out_features / head_dim, kept neurons =
intermediate.dense.out_features) is at most budget · dense and as close to it as possible. Every trial
prunes a fresh deep copy of the model. Each pruned model is checked against the dense model with the
same heads/neurons masked (max |Δlogit| on a calibration batch), and r = 0 is checked to equal dense.

Writes bench/results/torch_pruning{_quick}.json and .png. --quick: budgets 0.4,0.5,0.6, 16 test batches.
MACs are multiply-accumulates per example at sequence length 64 (FLOPs = 2 · MACs)."""
import argparse
import copy
import json
import os
import sys
import time

import common  # noqa: E402  (bench/ is sys.path[0] when run as a script)
import torch_pruning as tp  # noqa: E402

import torch  # noqa: E402
from transformers.models.bert.modeling_bert import BertSelfAttention  # noqa: E402

from optin.evaluate import accuracy  # noqa: E402
from optin.masking import mask_hooks  # noqa: E402
from optin.prune import cost_model_for  # noqa: E402
from optin.report import versions  # noqa: E402

from importlib import metadata as md  # noqa: E402

METHODS = {"magnitude": "tp-magnitude", "taylor": "tp-taylor"}


def make_importance(name):
    if name == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    return tp.importance.GroupTaylorImportance()


def compute_grads(model, calib):
    """Accumulate ∂(cross-entropy)/∂w over the calibration batches into .grad (eval mode)."""
    model.eval()
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        for b in calib:
            model(**b).loss.backward()


def tp_prune(base, name, ratio, example, calib=None, grads=None):
    """Prune a fresh deep copy of `base` with TP at global ratio `ratio`; return (model, seconds).
    Taylor: `grads` (name → tensor) are copied in when given, otherwise computed on the copy (timed)."""
    m = copy.deepcopy(base).eval()
    t0 = time.perf_counter()
    if name == "taylor":
        if grads is not None:
            for n, p in m.named_parameters():
                p.grad = grads[n].clone() if n in grads else None
        else:
            compute_grads(m, calib)
    # ratio 0 too: the graph is built and stepped, and must remove nothing
    num_heads = {}
    for mod in m.modules():
        if isinstance(mod, BertSelfAttention):
            for lin in (mod.query, mod.key, mod.value):
                num_heads[lin] = mod.num_attention_heads
    ignored = [m.bert.embeddings, m.bert.pooler, m.classifier]
    ignored += [x for x in m.modules() if isinstance(x, torch.nn.LayerNorm)]
    pruner = tp.pruner.BasePruner(
        m, example, importance=make_importance(name), global_pruning=True,
        pruning_ratio=ratio, head_pruning_ratio=ratio, num_heads=num_heads,
        prune_num_heads=True, prune_head_dims=False, ignored_layers=ignored,
        output_transform=lambda out: out.logits.sum())
    pruner.step()
    for mod in m.modules():  # HF attention metadata (the TP example does the same)
        if isinstance(mod, BertSelfAttention):
            mod.num_attention_heads = pruner.num_heads[mod.query]
            mod.all_head_size = mod.query.out_features
            assert mod.all_head_size == mod.num_attention_heads * mod.attention_head_size
    secs = time.perf_counter() - t0
    m.zero_grad(set_to_none=True)
    return m, secs


def widths(m, head_dim):
    layers = m.bert.encoder.layer
    return ([l.attention.self.query.out_features // head_dim for l in layers],
            [l.intermediate.dense.out_features for l in layers])


def tp_macs(m, cm, head_dim):
    """(our analytic MACs per example, kept heads, kept neurons) of a TP-pruned model; cm: cost_model_for."""
    h, n = widths(m, head_dim)
    return cm.total(h, n), h, n


def taylor_grads(model, calib):
    """name → ∂(cross-entropy)/∂w over the calibration batches, for tp_prune(grads=...)."""
    compute_grads(model, calib)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def match_ratio(model, name, target, example, calib, grads, macs_of, iters=20, cache=None):
    """Bisect TP's global ratio r (a fresh deep copy per trial) for the largest MAC count at or under
    `target`; ties go to the smaller r. `cache` (ratio → MACs) may be shared across budgets.
    Returns (r, MACs)."""
    cache = {} if cache is None else cache

    def trial(r):
        if r not in cache:
            m, _ = tp_prune(model, name, r, example, calib, grads)
            cache[r] = macs_of(m)[0]
        return cache[r]

    lo, hi = 0.0, 1.0  # macs(lo) > target; find the smallest ratio under the budget
    for _ in range(iters):
        mid = (lo + hi) / 2
        if trial(mid) <= target:
            hi = mid
        else:
            lo = mid
    feas = [(mac, r) for r, mac in cache.items() if mac <= target]
    if not feas:
        raise SystemExit(f"{name}: no TP ratio reaches {target:.0f} MACs")
    best_mac, best_r = max(feas, key=lambda t: (t[0], -t[1]))
    return best_r, best_mac


def _match_rows(pruned, full):
    """Index into `full` of each row of `pruned` (rows were copied, so the match is exact)."""
    d = torch.cdist(pruned.double(), full.double(), compute_mode="donot_use_mm_for_euclid_dist")
    v, i = d.min(1)
    assert float(v.max()) == 0.0, "pruned row not found in the dense weights"
    return i


def kept_masks(dense, m, head_dim):
    """Recover which heads and neurons TP kept by matching weights; check q, k, v, o agree."""
    H, N = [], []
    for ld, lp in zip(dense.bert.encoder.layer, m.bert.encoder.layer):
        sd, sp = ld.attention.self, lp.attention.self
        nh = sd.num_attention_heads
        hsets = []
        for a, b in ((sd.query, sp.query), (sd.key, sp.key), (sd.value, sp.value)):
            idx = _match_rows(torch.cat([b.weight, b.bias[:, None]], 1), torch.cat([a.weight, a.bias[:, None]], 1))
            hsets.append(idx)
        o_idx = _match_rows(lp.attention.output.dense.weight.t(), ld.attention.output.dense.weight.t())
        hsets.append(o_idx)
        for s in hsets[1:]:
            assert torch.equal(s, hsets[0]), "q/k/v/o kept different channels"
        idx = hsets[0]
        heads = idx.view(-1, head_dim)[:, 0] // head_dim
        assert torch.equal(idx.view(-1, head_dim), heads[:, None] * head_dim + torch.arange(head_dim)), \
            "TP cut inside a head"
        hm = torch.zeros(nh)
        hm[heads] = 1
        ni = _match_rows(torch.cat([lp.intermediate.dense.weight, lp.intermediate.dense.bias[:, None]], 1),
                         torch.cat([ld.intermediate.dense.weight, ld.intermediate.dense.bias[:, None]], 1))
        assert torch.equal(_match_rows(lp.output.dense.weight.t(), ld.output.dense.weight.t()), ni)
        nm = torch.zeros(ld.intermediate.dense.out_features)
        nm[ni] = 1
        H.append(hm)
        N.append(nm)
    return torch.stack(H), torch.stack(N)


@torch.no_grad()
def spec_from_tp(dense, m, head_dim):
    """The PruneSpec of kept heads and neurons of a TP-pruned model (kept_masks: matched weight rows)."""
    from optin.spec import PruneSpec

    hm, nm = kept_masks(dense, m, head_dim)
    return PruneSpec.from_masks(dense.config.model_type, hm, nm)


@torch.no_grad()
def check_vs_masked(dense, adapter, m, head_dim, batch):
    """max |logit(pruned) − logit(dense with the same units masked)| on one batch."""
    hm, nm = kept_masks(dense, m, head_dim)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with mask_hooks(adapter) as state:
        state.set(hm, nm)
        ref = dense(**inputs).logits
    return float((m(**inputs).logits - ref).abs().max())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--methods", default="magnitude,taylor")
    ap.add_argument("--budgets", default=None)
    ap.add_argument("--test-batches", type=int, default=None, help="first N test batches of 64 (default: all)")
    ap.add_argument("--iters", type=int, default=20, help="bisection steps on the TP ratio")
    a = ap.parse_args()
    budgets = [float(b) for b in (a.budgets or ("0.4,0.5,0.6" if a.quick else "0.3,0.4,0.5,0.6,0.7,0.8,0.9")).split(",")]
    S = common.setup()
    torch.set_num_threads(1)  # the machine is shared: one thread everywhere
    model, adapter, calib = S["model"].eval(), S["adapter"], S["calib"]
    nb = a.test_batches or (16 if a.quick else None)
    test = S["test"][:nb] if nb else S["test"]
    d = adapter.dims()
    hd = d.head_dim
    cm = cost_model_for(adapter, common.SEQ)
    dense_macs = cm.total([d.num_heads] * d.num_layers, [d.ffn_size] * d.num_layers)
    example = {k: v[:2] for k, v in calib[0].items() if k != "labels"}

    t0 = time.time()
    dense = accuracy(model, test)
    print(f"dense acc {dense['accuracy']:.4f} ±{dense['ci95']:.4f} (n={dense['n']}, {time.time() - t0:.0f}s), "
          f"dense MACs {dense_macs / 1e6:.1f} M/example at seq {common.SEQ}", flush=True)

    def macs_of(m):
        return tp_macs(m, cm, hd)

    grads = None
    if "taylor" in a.methods.split(","):
        t0 = time.time()
        grads = taylor_grads(model, calib)
        print(f"taylor gradients on {sum(len(b['labels']) for b in calib)} calibration snippets: "
              f"{time.time() - t0:.1f}s", flush=True)

    # Sanity: ratio 0 is the dense model (TP builds its graph but prunes nothing).
    sanity = {}
    for name in a.methods.split(","):
        m1, _ = tp_prune(model, name, 0.0, example, grads=grads)  # pruner built and stepped, nothing removed
        b0 = {k: v for k, v in calib[0].items() if k != "labels"}
        with torch.no_grad():
            diff = float((m1(**b0).logits - model(**b0).logits).abs().max())
        acc0 = accuracy(m1, test)
        sanity[name] = {"widths": widths(m1, hd), "max_logit_diff": diff, "accuracy": acc0["accuracy"]}
        print(f"{name}: ratio 0 → widths {widths(m1, hd)}, max |Δlogit| {diff:.2e}, "
              f"acc {acc0['accuracy']:.4f} (dense {dense['accuracy']:.4f})", flush=True)
        assert acc0["accuracy"] == dense["accuracy"] and diff < 1e-5
        del m1

    rows = []
    for name in a.methods.split(","):
        assert name in METHODS, name
        cache = {}
        for b in budgets:
            t_search, n_before = time.time(), len(cache)
            best_r, best_mac = match_ratio(model, name, b * dense_macs, example, calib, grads, macs_of, a.iters, cache)
            t_search = time.time() - t_search
            # the final ratio again, from scratch and timed (Taylor: gradients included)
            m, prune_s = tp_prune(model, name, best_r, example, calib, None)
            macs, h, n = macs_of(m)
            assert macs == best_mac
            diff = check_vs_masked(model, adapter, m, hd, calib[0])
            acc = accuracy(m, test)
            row = {"method": METHODS[name], "budget": b, "tp_ratio": best_r, "macs_ratio": macs / dense_macs,
                   "accuracy": acc["accuracy"], "ci95": acc["ci95"], "drop": dense["accuracy"] - acc["accuracy"],
                   "prune_s": prune_s, "bisection_s": t_search, "bisection_trials": len(cache) - n_before,
                   "max_logit_diff_vs_masked": diff, "heads": h, "neurons": n}
            rows.append(row)
            print(f"{METHODS[name]:13s} {b:.1f}  r={best_r:.4f}  MACs {macs / dense_macs:.4f}  "
                  f"acc {acc['accuracy']:.4f} ±{acc['ci95']:.4f}  drop {row['drop'] * 100:+.2f}  "
                  f"prune {prune_s:.2f}s  heads {h} neurons {n}  |Δ vs masked| {diff:.1e}", flush=True)
            del m

    suffix = "_quick" if a.quick else ""
    res = {"model": "minilm-rt", "seq_len": common.SEQ, "test_examples": dense["n"], "dense": dense,
           "dense_macs_per_example": dense_macs, "calibration": sum(len(b["labels"]) for b in calib),
           "macs_note": "analytic MACs per example (FLOPs = 2 x MACs), optin cost model at seq 64",
           "tp_settings": {"global_pruning": True, "pruning_ratio": "r", "head_pruning_ratio": "r",
                           "prune_num_heads": True, "prune_head_dims": False,
                           "ignored": "embeddings, all LayerNorms, pooler, classifier",
                           "magnitude": "GroupMagnitudeImportance(p=2), group_reduction=mean, normalizer=mean",
                           "taylor": "GroupTaylorImportance(), |w*dL/dw|, mean/mean, CE on calibration, eval mode"},
           "sanity_ratio0": sanity, "rows": rows,
           "versions": {**versions(), "torch-pruning": md.version("torch-pruning"),
                        "torch_pruning.__version__": getattr(tp, "__version__", None)}}
    os.makedirs(common.RESULTS, exist_ok=True)
    with open(os.path.join(common.RESULTS, f"torch_pruning{suffix}.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    common.plot_accuracy(rows, dense, os.path.join(common.RESULTS, f"torch_pruning{suffix}.png"),
                         f"minilm-rt, Torch-Pruning {md.version('torch-pruning')}, no fine-tuning", x="macs_ratio",
                         xlabel="MACs kept (fraction of dense, reached at or under the budget)")


if __name__ == "__main__":
    main()
