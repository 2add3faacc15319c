"""Attention as the model runs it (SDPA in transformers 5) against eager attention, exported by
export.onnx._torch_export: ONNX Runtime CPU latency of both graphs, float32 and dynamic INT8 (the
MatMuls), interleaved in one process; node counts; max |logit| difference to PyTorch.

    python bench/export_attention.py [--model minilm-rt] [--iters 200] [--threads 2]

Writes bench/results/export_attention_{model}.json."""
import argparse
import collections
import os
import tempfile

import numpy as np
import onnx
import torch
from common import RESULTS, interleaved_ms, ort_session
from onnxruntime.quantization import QuantType, quantize_dynamic

from export.onnx import _torch_export
from optin.adapters import adapter_for
from optin.io import load_model, write_json
from optin.report import versions
from optin.zoo import resolve_model

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="minilm-rt")
ap.add_argument("--iters", type=int, default=200)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--seq", type=int, default=64)
a = ap.parse_args()

model, _ = load_model(resolve_model(a.model))
model.eval()
ad = adapter_for(model)
names = ad.input_names()
inputs = ad.random_inputs(a.batch, a.seq, torch.Generator().manual_seed(0))
if "attention_mask" in inputs:
    inputs["attention_mask"][:, 3 * a.seq // 4:] = 0  # some padding, as real batches have
feeds = {k: v.numpy() for k, v in inputs.items() if k in names}
with torch.no_grad():
    ref = model(**inputs).logits.numpy()
tmp_dir = tempfile.TemporaryDirectory()  # removed at exit
tmp = tmp_dir.name
files, nodes = {}, {}
for impl, eager in (("as-is", False), ("eager", True)):
    f = os.path.join(tmp, f"{impl}.onnx")
    _torch_export(model, names, f, 17, False, eager_attention=eager)
    q = os.path.join(tmp, f"{impl}.int8.onnx")
    quantize_dynamic(f, q, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    files[impl], files[impl + " int8"] = f, q
    nodes[impl] = dict(collections.Counter(n.op_type for n in onnx.load(f).graph.node).most_common())
sess = {k: ort_session(f, a.threads) for k, f in files.items()}
diff = {k: float(np.abs(s.run(None, feeds)[0] - ref).max()) for k, s in sess.items()}
med = interleaved_ms(sess, feeds, a.iters)
res = {"model": a.model, "attn_implementation": model.config._attn_implementation, "batch": a.batch, "seq": a.seq,
       "threads": a.threads, "iters": a.iters, "median_ms": med, "max_abs_diff_to_torch": diff,
       "eager_speedup": {"fp32": med["as-is"] / med["eager"], "int8": med["as-is int8"] / med["eager int8"]},
       "nodes": nodes, "load_avg": os.getloadavg(), "versions": versions()}
print({k: round(v, 3) for k, v in res["eager_speedup"].items()}, {k: round(v, 2) for k, v in med.items()})
write_json(os.path.join(RESULTS, f"export_attention_{a.model}.json"), res)
