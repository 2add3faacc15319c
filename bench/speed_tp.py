"""Measured ONNX Runtime CPU speedup of Torch-Pruning's pruned minilm-rt over dense, at the MAC
budgets of tp_baseline.py, timed exactly as speed_methods.py times our methods: exported with
parity, interleaved against the dense model, batch 8 × 64 real tokens, 2 intra-op threads, no
spinning (common.time_vs_dense, shared with speed_methods.py).

    python bench/speed_tp.py [--methods magnitude,taylor] [--budgets 0.3,...,0.9] [--iters 200]
                             [--reference optin-est] [--bisect] [--quick]

How a TP model reaches the export path. export_onnx, open_pair and model_macs read a pruned
folder (weights + spec.json), and load_pruned rebuilds it as narrow(dense skeleton, spec) followed
by a strict load of the saved weights. A TP-pruned model is a plain BertForSequenceClassification
whose q/k/v/o and FFN Linears were sliced, so it has exactly that shape once we know which heads
and neurons it kept: tp_baseline.spec_from_tp recovers the PruneSpec by matching its weight rows
to the dense ones (and asserts that q, k, v and o were cut at the same whole heads). The folder
then holds TP's own state dict with that spec (common.save_for_export), so what is exported and
timed is TP's model, through the same code as ours, with the same dense comparison and the same
MAC count. Exporting the TP model directly with torch.onnx would have needed a second export and
comparison path beside export_onnx / open_pair, for a graph that is the same either way. Checked
for every row, before timing: TP's weights equal our narrow(dense, spec) weights bit for bit (TP
slices rows in index order and rescales nothing), the reloaded folder gives TP's logits exactly,
and ONNX Runtime matches the reloaded model (export_onnx's parity check, 64 real samples).

The TP ratio of each (method, budget) is read from torch_pruning{_quick}.json, the accuracy run,
and the pruned widths are asserted equal to that run's; a budget absent there (or --bisect) is
bisected again with tp_baseline.match_ratio. --reference METHODS times our methods' masks at the
same budgets in the same process (interleaved with the TP models, budget by budget), so the TP
rows have a same-load comparison; "" for none.

Writes bench/results/speed_tp{_quick}.{json,png} (--out NAME: NAME.{json,png}). --quick: budget 0.6, 30 iterations, no reference."""
import argparse
import copy
import json
import os
import shutil
import tempfile

import common  # noqa: E402  (bench/ is sys.path[0] when run as a script)
import tp_baseline as tpb  # noqa: E402

import torch  # noqa: E402

from optin.adapters import adapter_for  # noqa: E402
from optin.io import load_pruned, write_json  # noqa: E402
from optin.narrow import narrow  # noqa: E402
from optin.prune import cost_model_for  # noqa: E402
from optin.report import versions  # noqa: E402

from importlib import metadata as md  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--quick", action="store_true")
ap.add_argument("--methods", default="magnitude,taylor")
ap.add_argument("--budgets", default=None)
ap.add_argument("--iters", type=int, default=None, help="interleaved timing pairs (default 200, quick 30)")
ap.add_argument("--reference", default=None, help="our methods timed beside TP (default optin-est, quick none)")
ap.add_argument("--bisect", action="store_true", help="re-bisect the TP ratio instead of reading torch_pruning.json")
ap.add_argument("--out", default=None, help="results file name without extension (default speed_tp, quick speed_tp_quick)")
a = ap.parse_args()
budgets = [float(b) for b in (a.budgets or ("0.6" if a.quick else "0.3,0.4,0.5,0.6,0.7,0.8,0.9")).split(",")]
iters = a.iters or (30 if a.quick else 200)
refs = [r for r in (a.reference if a.reference is not None else ("" if a.quick else "optin-est")).split(",") if r]
methods = a.methods.split(",")
assert all(m in tpb.METHODS for m in methods), methods

S = common.setup(test=False)
torch.set_num_threads(1)  # torch work (TP pruning, checks) on one thread; ONNX Runtime times with 2
model, tok, ad, calib = S["model"].eval(), S["tok"], S["adapter"], S["calib"]
d = ad.dims()
hd = d.head_dim
cm = cost_model_for(ad, common.SEQ)
dense_macs = cm.total([d.num_heads] * d.num_layers, [d.ffn_size] * d.num_layers)
example = {k: v[:2] for k, v in calib[0].items() if k != "labels"}  # as tp_baseline.py
probe = {k: v for k, v in calib[0].items() if k != "labels"}
grads = tpb.taylor_grads(model, calib) if "taylor" in methods else None

stored = {}
for f in (["torch_pruning_quick.json"] if a.quick else []) + ["torch_pruning.json"]:
    p = os.path.join(common.RESULTS, f)
    if os.path.exists(p):
        for r in json.load(open(p))["rows"]:
            stored.setdefault((r["method"], r["budget"]), r)


def tp_model(name, budget):
    """TP's model at `budget`: the accuracy run's ratio (widths checked) or a fresh bisection."""
    row = None if a.bisect else stored.get((tpb.METHODS[name], budget))
    if row:
        r = row["tp_ratio"]
    else:
        r, _ = tpb.match_ratio(model, name, budget * dense_macs, example, calib, grads,
                               lambda m: tpb.tp_macs(m, cm, hd))
    m, _ = tpb.tp_prune(model, name, r, example, calib, grads)
    macs, h, n = tpb.tp_macs(m, cm, hd)
    assert macs <= budget * dense_macs, (name, budget, macs / dense_macs)
    if row:
        assert (h, n) == (row["heads"], row["neurons"]), f"{name} {budget}: widths differ from torch_pruning.json"
    return m, r, ("torch_pruning.json" if row else "bisected"), row


@torch.no_grad()
def checks(m, spec, folder):
    """TP weights vs our narrow(dense, spec); reloaded folder vs TP logits; TP vs our narrowed logits."""
    ours = narrow(adapter_for(copy.deepcopy(model)), spec).eval()
    sd_tp, sd_ours = m.state_dict(), ours.state_dict()
    assert sd_tp.keys() == sd_ours.keys()
    w = max(float((sd_tp[k].double() - sd_ours[k].double()).abs().max()) if sd_tp[k].numel() else 0.0
            for k in sd_tp)
    lt = m(**probe).logits
    return {"max_weight_diff_vs_narrow": w,
            "max_logit_diff_reloaded": float((load_pruned(folder)(**probe).logits - lt).abs().max()),
            "max_logit_diff_vs_narrow": float((ours(**probe).logits - lt).abs().max())}


rows = []
work = tempfile.mkdtemp(prefix="speed_tp.")
against = "minilm-rt"  # exported into the first folder, then reused by every pair
try:
    for budget in budgets:
        for name in [tpb.METHODS[x] for x in methods] + refs:
            folder = os.path.join(work, f"{name}-{budget}")
            if name.startswith("tp-"):
                tname = name[3:]
                m, r, src, acc_row = tp_model(tname, budget)
                spec = tpb.spec_from_tp(model, m, hd)
                common.save_for_export(m, tok, spec, folder)  # TP's own weights, our spec
                chk = checks(m, spec, folder)
                assert chk["max_weight_diff_vs_narrow"] == 0.0 and chk["max_logit_diff_reloaded"] == 0.0, chk
                extra = {"tp_ratio": r, "tp_ratio_from": src, **chk,
                         "accuracy": acc_row["accuracy"] if acc_row else None}
            else:
                m, spec = common.method_model(S, name, budget)
                common.save_for_export(m, tok, spec, folder)
                extra = {"reference": True}
            t, against = common.time_vs_dense(folder, iters, against)
            row = {"method": name, "budget": budget, **t, **extra,
                   "heads": spec.kept_heads, "neurons": spec.kept_neurons}
            rows.append(row)
            print(f"{name:13s} {budget:.1f} MACs {row['mac_ratio']:.4f}  speedup {row['speedup']:.2f}x "
                  f"(MAC-implied {row['mac_implied']:.2f}x, efficiency {row['speedup'] / row['mac_implied']:.2f})  "
                  f"dense {row['dense_ms']:.1f} ms  pruned {row['pruned_ms']:.1f} ms  parity {row['parity']:.1e}"
                  + (f"  |Δw| {row['max_weight_diff_vs_narrow']:.0e} |Δlogit| reload "
                     f"{row['max_logit_diff_reloaded']:.0e} narrow {row['max_logit_diff_vs_narrow']:.0e}"
                     if name.startswith("tp-") else ""), flush=True)
            del m
finally:
    shutil.rmtree(work, ignore_errors=True)
out = a.out or ("speed_tp_quick" if a.quick else "speed_tp")
write_json(os.path.join(common.RESULTS, f"{out}.json"),
           {"model": "minilm-rt", "backend": "onnxruntime CPU, 2 threads, no spinning", "batch": common.SPEED_BATCH,
            "seq": common.SEQ, "iters": iters, "dense_macs_per_example": dense_macs,
            "note": "TP models exported from their own weights with the PruneSpec recovered by "
                    "tp_baseline.spec_from_tp; rows with reference=true are our methods, same run",
            "rows": rows, "versions": {**versions(), "torch-pruning": md.version("torch-pruning")}})
common.plot_speed([r for r in rows if not r.get("reference")], os.path.join(common.RESULTS, f"{out}.png"),
                  f"minilm-rt, Torch-Pruning {md.version('torch-pruning')} models, ORT CPU",
                  ref_rows=[r for r in rows if r.get("reference")])
