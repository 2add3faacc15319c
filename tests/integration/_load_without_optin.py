"""Child of test_remote_code.py, run by an interpreter that sees torch and transformers but not
optin: load each pruned folder with its transformers Auto class and trust_remote_code=True, and
save its logits. argv: cases.json ({name: {folder, auto, inputs, logits}}), results.json (written)."""
import json
import sys
import traceback

try:
    import optin  # noqa: F401
    optin_importable = True
except ImportError:
    optin_importable = False

import torch
import transformers
from safetensors.torch import load_file, save_file

cases = json.load(open(sys.argv[1]))
results = {"optin_importable": optin_importable, "cases": {}}
for name, case in cases.items():
    try:
        auto = getattr(transformers, case["auto"])
        model, info = auto.from_pretrained(case["folder"], trust_remote_code=True, output_loading_info=True)
        with torch.no_grad():
            logits = model(**load_file(case["inputs"])).logits
        save_file({"logits": logits.contiguous()}, case["logits"])
        results["cases"][name] = {"class": f"{type(model).__module__}.{type(model).__name__}",
                                  "loading": {k: sorted(map(str, v)) for k, v in info.items()}}
    except Exception:
        results["cases"][name] = {"error": traceback.format_exc()}
json.dump(results, open(sys.argv[2], "w"), indent=2)
