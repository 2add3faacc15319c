"""The labelled splits a model folder was pruned with, for task accuracy and INT8 calibration.

optin.json records the data spec; report.json records the pruner's calib / seed / eval_limit.
A user file has no fixed split (optin.data shuffles it with calib and seed), so the same values
are needed to get back exactly the test examples the pruner evaluated on and the calibration
examples it scored with; without report.json the pruner's defaults are used and said.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

from optin.errors import OptinError

DEFAULT_CALIB, DEFAULT_SEED = 128, 0   # optin.prune.PruneConfig's defaults


@dataclass
class Splits:
    data: str | None
    calib: list = field(default_factory=list)   # (input, pair, label id) examples
    test: list = field(default_factory=list)
    eval_limit: int | None = None
    note: str = ""                                # where they came from, or why they are missing


def split_config(loaded) -> dict | None:
    """The pruner's {calib, seed, eval_limit}: a dense export folder carries them in export.json
    (meta "split"), a pruned folder in report.json's config; None when neither says."""
    from optin.io import read_json

    if loaded.meta.get("split"):
        return dict(loaded.meta["split"])
    cfg = (read_json(os.path.join(loaded.path, "report.json"), {}) or {}).get("config")
    return {k: cfg.get(k) for k in ("calib", "seed", "eval_limit")} if cfg else None


def splits(loaded, eval_limit: int | None = None) -> Splits:
    """Calibration and test examples (labels encoded to the model's ids), test cut at eval_limit
    (default: the pruner's own --eval-limit, so engine and pruner accuracies are comparable)."""
    from optin.adapters import adapter_for
    from optin.data import load_data

    data = loaded.meta.get("data")
    if not data:
        return Splits(None, note="no data spec in optin.json")
    cfg = split_config(loaded) or {}
    calib, seed = int(cfg.get("calib") or DEFAULT_CALIB), int(cfg.get("seed") or DEFAULT_SEED)
    limit = eval_limit if eval_limit is not None else cfg.get("eval_limit")
    c = loaded.model.config
    task = adapter_for(loaded.model).task  # class ids, or a segmenter's per-pixel label maps (optin.tasks)
    try:
        ds = load_data(data, calib=calib, seed=seed)
        test = task.encode_labels(ds.split("test"), c, f"{data} test")
        cal = task.encode_labels(ds.splits.get("calib") or [], c, f"{data} calib")
    except OptinError as e:
        return Splits(data, note=str(e))
    where = "the pruner's settings" if cfg else "the pruner's defaults (no report.json)"
    return Splits(data, cal, test[:limit] if limit else test, limit,
                  f"{data} (calib {calib}, seed {seed}: {where})")


def seeded(examples: list, seed: int) -> list:
    """A seeded reordering: which calibration examples an INT8 build uses depends on the seed only."""
    out = list(examples)
    random.Random(seed).shuffle(out)
    return out


def batches(loaded, examples, batch_size: int = 64, limits=None, labels: bool = True) -> list[dict]:
    """Encoded batches through the model's processor, kept inside an engine's shape range
    (limits ((min batch, min seq), (max batch, max seq)), as TensorRT profiles need)."""
    from optin.data import make_batches

    from .samples import _pad_to

    (lo_b, lo_s), (hi_b, hi_s) = limits or ((1, 1), (batch_size, 1 << 30))
    size = max(lo_b, min(batch_size, hi_b))
    max_len = min(int(loaded.meta.get("max_length") or 128), hi_s)
    names = set(loaded.input_names) | ({"labels"} if labels else set())
    out = []
    for b in make_batches(loaded.tokenizer, examples, size, max_len, with_labels=labels):
        b = {k: v for k, v in b.items() if k in names}
        if "token_type_ids" in loaded.input_names and "token_type_ids" not in b:
            b["token_type_ids"] = b["input_ids"] * 0
        y = b.pop("labels", None)
        b = _pad_to(b, lo_s, getattr(loaded.tokenizer, "pad_token_id", None) or 0)
        if len(next(iter(b.values()))) >= lo_b:
            out.append(b if y is None else b | {"labels": y})
    return out
