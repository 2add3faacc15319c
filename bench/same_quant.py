"""Pruned INT8 against dense INT8 under the *same* quantisation: every MatMul / Gemm of both graphs
dynamically quantised (ONNX Runtime's quantize_dynamic, no node left in float), so the ratio is
pruning's alone. Float32 and INT8 graphs of the dense model and of the default recipe at `--flops`
(optin-est scores, the re-fit), exported as `optin export` does (eager attention), timed
interleaved in one process; the measured INT8 ratio against the MAC-implied one; and where the
time goes, by operator type (ONNX Runtime's profiler, kernel time), which is what keeps the ratio
below the MAC ratio.

    python bench/same_quant.py [--model minilm-rt] [--flops 0.3] [--iters 200] [--threads 2]

Writes bench/results/same_quant_{model}_{flops}.{json,png}. `--eval` adds each graph's test
accuracy: these fully quantised graphs are what `optin engine` refuses on logit parity (the
dense one), which is why `optin run` leaves some nodes in float (bench/README.md, "Pruning ×
precision")."""
import argparse
import collections
import json
import os
import tempfile

import numpy as np
import torch
from common import RESULTS, ZOO_DATA, interleaved_ms, ort_session, scores_cached
from onnxruntime.quantization import QuantType, quantize_dynamic

from export.accuracy import ci95, predictions
from export.onnx import _torch_export
from optin.importance import ScoreConfig
from optin.io import write_json
from optin.plots import _plt
from optin.prune import PruneConfig, dense_model_macs, prepare, prune_model
from optin.report import versions

TEXT_MODELS = ("minilm-rt", "mpnet-rt")  # token inputs, b × seq timing
MATMUL = ("MatMul", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "Gemm", "FusedMatMul",
          "QLinearMatMul")

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="minilm-rt", choices=TEXT_MODELS)
ap.add_argument("--flops", type=float, default=0.3)
ap.add_argument("--iters", type=int, default=200)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--seq", type=int, default=64)
ap.add_argument("--eval", action="store_true", help="also each graph's accuracy on the test split (5,000 snippets)")
a = ap.parse_args()
torch.set_num_threads(a.threads)

prep = prepare(a.model, ZOO_DATA[a.model], PruneConfig(), log=lambda *_: None)
dense_model = prep.model
ad = prep.adapter
names = ad.input_names()
inputs = ad.random_inputs(a.batch, a.seq, torch.Generator().manual_seed(0))
feeds = {k: v.numpy() for k, v in inputs.items() if k in names}  # every token real: b × seq as timed elsewhere
tmp_dir = tempfile.TemporaryDirectory()  # removed at exit
tmp = tmp_dir.name
dense_f = os.path.join(tmp, "dense.onnx")
_torch_export(dense_model, names, dense_f, 17, False, eager_attention=True)
dense_macs = dense_model_macs(ad, a.seq)

scores = scores_cached(ad, prep.calib, "optin-est", ScoreConfig(), f"{a.model}-c128")  # as bench/recon.py scored it
res_p = prune_model(dense_model, prep.calib, config=PruneConfig(flops=a.flops, fvcore=False), recon_data=prep.recon,
                    scores=scores, log=lambda *_: None)
pruned_macs = ad.spec_macs(res_p.spec, a.seq)  # ad reads the config's dense widths: exact MACs of the spec
pruned_f = os.path.join(tmp, "pruned.onnx")
_torch_export(res_p.model, names, pruned_f, 17, False, eager_attention=True)

files = {"dense fp32": dense_f, "pruned fp32": pruned_f}
for k, f in (("dense int8", dense_f), ("pruned int8", pruned_f)):
    q = os.path.join(tmp, k.replace(" ", "_") + ".onnx")
    quantize_dynamic(f, q, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    files[k] = q


sess = {k: ort_session(f, a.threads) for k, f in files.items()}
interleaved_ms(sess, feeds, 10)  # warm-up
med = interleaved_ms(sess, feeds, a.iters)

# where the time goes: kernel time per operator type, 30 profiled runs of each graph
ops = {}
for k, f in files.items():
    s = ort_session(f, a.threads, os.path.join(tmp, "prof"))
    for _ in range(30):
        s.run(None, feeds)
    agg = collections.Counter()
    with open(s.end_profiling()) as fh:
        for e in json.load(fh):
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                agg[e["args"]["op_name"]] += e["dur"] / 30 / 1000  # ms per run
    ops[k] = dict(agg.most_common())



def accuracy(s, test_feeds, labels) -> dict:
    """Test accuracy of one ONNX Runtime session (the same batches prune_model evaluates on)."""
    p = float((predictions(lambda f: {"logits": s.run(None, f)[0]}, test_feeds) == labels).mean())
    return {"accuracy": p, "ci95": ci95(p, len(labels)), "n": len(labels)}


acc = None
if a.eval:
    labels = np.concatenate([b["labels"].numpy() for b in prep.test])
    test_feeds = [{k: v.numpy() for k, v in b.items() if k in names} for b in prep.test]
    acc = {k: accuracy(s, test_feeds, labels) for k, s in sess.items()}
implied = dense_macs / pruned_macs
matmul = {k: sum(v for op, v in o.items() if op in MATMUL) for k, o in ops.items()}
rest = {k: sum(o.values()) - matmul[k] for k, o in ops.items()}
speed = {"fp32": med["dense fp32"] / med["pruned fp32"], "int8": med["dense int8"] / med["pruned int8"]}
res = {"model": a.model, "flops": a.flops, "mac_ratio": pruned_macs / dense_macs, "mac_implied_speedup": implied,
       "heads": res_p.spec.kept_heads, "neurons": res_p.spec.kept_neurons,
       "batch": a.batch, "seq": a.seq, "threads": a.threads, "iters": a.iters, "median_ms": med,
       "pruned_over_dense": speed, "fraction_of_mac_implied": {k: v / implied for k, v in speed.items()},
       "int8_over_fp32": {"dense": med["dense fp32"] / med["dense int8"],
                          "pruned": med["pruned fp32"] / med["pruned int8"]},
       "speedup_over_dense_fp32": {k: med["dense fp32"] / v for k, v in med.items()}, "test_accuracy": acc,
       "kernel_ms_per_run": ops, "matmul_kernel_ms": matmul, "other_kernel_ms": rest,
       "load_avg": os.getloadavg(), "versions": versions()}
print(json.dumps({k: res[k] for k in ("mac_implied_speedup", "pruned_over_dense", "fraction_of_mac_implied",
                                      "speedup_over_dense_fp32", "test_accuracy", "matmul_kernel_ms",
                                      "other_kernel_ms")}, indent=1))
out = os.path.join(RESULTS, f"same_quant_{a.model}_{a.flops:g}")
write_json(out + ".json", res)

plt = _plt()
fig, ax = plt.subplots(figsize=(8, 4.2))
keys = list(files)
total = collections.Counter()
for o in ops.values():
    total.update(o)
top = [op for op, _ in total.most_common(8)]
bottom = np.zeros(len(keys))
for op in top + ["other"]:
    vals = np.array([ops[k].get(op, 0.0) if op != "other" else sum(v for o2, v in ops[k].items() if o2 not in top)
                     for k in keys])
    ax.bar(keys, vals, bottom=bottom, label=op)
    bottom += vals
ax.set_ylabel(f"kernel ms per run (b{a.batch} × {a.seq})")
ax.set_title(f"{a.model} at {a.flops:g} of MACs, every MatMul INT8 on both sides: int8 speedup "
             f"{speed['int8']:.2f}x, MAC-implied {implied:.2f}x", fontsize=9)
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(out + ".png", dpi=120)
