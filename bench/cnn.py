"""CNN channel pruning on resnet-fmnist: every method at several budgets, with and without the
BatchNorm recalibration that `optin prune` does after narrowing (optin.recalibrate), and the
ONNX Runtime speed of the default's models.

Scores are computed once per method on the 128 calibration images; each mask is searched with
channels aligned to 8 (the CNN default), physically narrowed on a copy, evaluated on the 10,000
test images, then its BatchNorm statistics are re-estimated on the calibration images and it is
evaluated again. For the default method (optin-est) the recalibrated model is also exported and
timed against dense (ONNX Runtime CPU, batch 32, 2 threads, interleaved).

    python bench/cnn.py [--budgets 0.4,0.5,0.6,0.7,0.8] [--methods optin-est,optin,fisher,magnitude,random] [--quick]

Writes bench/results/cnn{_quick}.{json,png}."""
import argparse
import copy
import os
import shutil
import tempfile

import torch
from common import RESULTS, plot_accuracy, time_vs_dense

from optin.adapters import adapter_for
from optin.evaluate import accuracy
from optin.importance import ScoreConfig, get_method
from optin.io import save_pruned, write_json
from optin.narrow import narrow
from optin.prune import PruneConfig, cost_model_for, dense_model_macs, prepare
from optin.recalibrate import recalibrate_batchnorm
from optin.report import versions
from optin.search import search
from optin.spec import PruneSpec

ap = argparse.ArgumentParser()
ap.add_argument("--budgets", default="0.4,0.5,0.6,0.7,0.8")
ap.add_argument("--methods", default="optin-est,optin,fisher,magnitude,random")
ap.add_argument("--iters", type=int, default=200)
ap.add_argument("--quick", action="store_true", help="budget 0.6, optin-est and fisher, 1,000 test images")
a = ap.parse_args()
if a.quick:
    a.budgets, a.methods, a.iters = "0.6", "optin-est,fisher", 50
torch.set_num_threads(1)
quiet = lambda *_: None  # noqa: E731
path, model, proc, ad, seq, calib, test, _ = prepare("resnet-fmnist", "fashion-mnist",
                                                     PruneConfig(eval_limit=1000 if a.quick else None), log=quiet)
d = ad.dims()
dense_macs = dense_model_macs(ad, seq)
dense = accuracy(model, test)
print(f"dense {dense['accuracy']:.4f}, {dense_macs / 1e6:.2f}M MACs", flush=True)
rows, dense_dir = [], "resnet-fmnist"
work = tempfile.mkdtemp(prefix="bench_cnn.")
try:
    for name in a.methods.split(","):
        scores = get_method(name)(ad, calib, ScoreConfig())
        for budget in map(float, a.budgets.split(",")):
            res = search(scores.heads, scores.neurons, cost_model_for(ad, seq), budget * dense_macs, ad.default_align)
            spec = PruneSpec.from_masks("resnet", res.head_mask, res.neuron_mask, dims=d)
            m = copy.deepcopy(model)
            narrow(adapter_for(m), spec)
            before = accuracy(m, test)
            recalibrate_batchnorm(m, calib, ad.input_names())
            after = accuracy(m, test)
            row = {"method": name, "budget": budget, "mac_ratio": ad.spec_macs(spec, seq) / dense_macs,
                   "accuracy_no_recalib": before["accuracy"], "accuracy": after["accuracy"], "ci95": after["ci95"],
                   "neurons": spec.kept_neurons}
            if name == "optin-est":
                out = os.path.join(work, f"{budget}")
                save_pruned(m, proc, spec, out, extra={"seq_len": seq, "max_length": seq, "source": path,
                                                       "data": "fashion-mnist"})
                speed, dense_dir = time_vs_dense(out, a.iters, against=dense_dir, batch=32, seq=seq)
                row.update(speed)
            rows.append(row)
            print(f"{name:10s} {budget:.1f} MACs {row['mac_ratio']:.3f}: {before['accuracy']:.4f} → recalibrated "
                  f"{after['accuracy']:.4f}" + (f"  speedup {row['speedup']:.2f}x (implied {row['mac_implied']:.2f}x)"
                                                if "speedup" in row else "") + f"  {spec.kept_neurons}", flush=True)
finally:
    shutil.rmtree(work, ignore_errors=True)
suffix = "_quick" if a.quick else ""
write_json(os.path.join(RESULTS, f"cnn{suffix}.json"),
           {"model": "resnet-fmnist", "data": "fashion-mnist test", "dense": dense, "dense_macs": dense_macs,
            "align": ad.default_align, "calibration": 128, "rows": rows, "versions": versions(),
            "speed": f"onnxruntime CPU, 2 threads, batch 32, interleaved, {a.iters} iters (optin-est rows)"})
plot_rows = rows + [{**r, "method": f"{r['method']} (no BN recal.)", "accuracy": r["accuracy_no_recalib"]}
                    for r in rows if r["method"] in ("optin-est", "fisher")]
plot_accuracy(plot_rows, dense, os.path.join(RESULTS, f"cnn{suffix}.png"),
              "resnet-fmnist channels, no retraining\n(BatchNorm statistics re-estimated unless marked)")
