"""How the trajectory terms combine across depth (and λ): accuracy on a train-split dev sample.

Settings are chosen on 2,000 seeded *train* snippets, never on the test split."""
import json
import os
import sys
import time

from common import RESULTS, mask_for, masked_accuracy, scores_cached, setup

from optin.importance import ScoreConfig
from optin.importance.trajectory import rescore

budgets = [float(b) for b in (sys.argv[1] if len(sys.argv) > 1 else "0.5,0.6").split(",")]
modes = (sys.argv[2] if len(sys.argv) > 2 else "normalized,sum,mean,final").split(",")
lams = [float(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "0.1").split(",")]
S = setup(dev=2000, test=False)
m, a = S["model"], S["adapter"]
t = time.time()
G = int(os.environ.get("GROUP", "32"))
raw = scores_cached(a, S["calib"], "optin", ScoreConfig(group_size=G), f"g{G}-c128").meta["raw"]
fis = scores_cached(a, S["calib"], "fisher", ScoreConfig(), "c128")
print(f"scores ready in {time.time() - t:.0f} s", flush=True)
rows = []
dense = masked_accuracy(m, a, S["dev"], None, None)["accuracy"]
print(f"dense dev accuracy {dense:.4f}", flush=True)
for b in budgets:
    r = mask_for(a, fis, b)
    acc = masked_accuracy(m, a, S["dev"], r.head_mask, r.neuron_mask)["accuracy"]
    rows.append({"method": "fisher", "budget": b, "dev_acc": acc, "heads": r.head_mask.sum(1).tolist(),
                 "neurons": r.neuron_mask.sum(1).tolist()})
    print(rows[-1], flush=True)
    for mode in modes:
        for lam in lams:
            s = rescore(raw, mode, lam)
            r = mask_for(a, s, b)
            acc = masked_accuracy(m, a, S["dev"], r.head_mask, r.neuron_mask)["accuracy"]
            rows.append({"method": f"optin-g{G}-{mode}-lam{lam}", "budget": b, "dev_acc": acc,
                         "heads": r.head_mask.sum(1).tolist(), "neurons": r.neuron_mask.sum(1).tolist()})
            print(rows[-1], flush=True)
os.makedirs(RESULTS, exist_ok=True)
with open(os.path.join(RESULTS, f"ablate_depth_g{G}.json"), "w") as fh:
    json.dump({"dense_dev": dense, "rows": rows}, fh, indent=1)
