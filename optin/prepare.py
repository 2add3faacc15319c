"""What `optin prune` reads: the model from a zoo name, folder or hub id, and its calibration,
re-fit and evaluation batches from a data spec (optin.data)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from .errors import BadData

DEFAULT_MAX_LENGTH = 128


def _model_max_length(path: str) -> int:
    zoo = os.path.join(path, "optin_zoo.json")
    if os.path.exists(zoo):
        return int(json.load(open(zoo))["max_length"])
    return DEFAULT_MAX_LENGTH



@dataclass
class Prepared:
    path: str
    model: torch.nn.Module
    tok: object
    adapter: object
    seq: int
    calib: list
    test: list
    data: object
    recon: list | None = None

    def __iter__(self):  # the tuple callers unpack: path, model, tok, adapter, seq, calib, test, data
        return iter((self.path, self.model, self.tok, self.adapter, self.seq, self.calib, self.test, self.data))


def prepare(model_spec: str, data_spec: str, cfg, log=print) -> Prepared:
    """Load model, processor (tokenizer), adapter and encoded calibration/test batches."""
    from .adapters import adapter_for
    from .data import make_batches, model_examples
    from .io import load_model
    from .zoo import resolve_model

    path = resolve_model(model_spec, log=log)
    model, tok = load_model(path)
    adapter = adapter_for(model)
    max_len = adapter.seq_len(cfg.max_length or _model_max_length(path))
    ds, calib_all, test = model_examples(data_spec, cfg.data, model.config, adapter.modality, cfg.calib, cfg.seed,
                                         log, task=adapter.task)
    calib = calib_all[:cfg.calib]
    if cfg.eval_limit:
        test = test[:cfg.eval_limit]
    if not calib:
        raise BadData(f"{ds.name}: no calibration examples")
    calib_b = make_batches(tok, calib, cfg.batch_size, max_len)
    test_b = make_batches(tok, test, 64, max_len)
    # the re-fit has its own count from the same split (its first examples are the scoring ones)
    recon_b = make_batches(tok, calib_all[:cfg.recon.calib], cfg.batch_size, max_len) if cfg.reconstruct else None
    return Prepared(path, model, tok, adapter, max_len, calib_b, test_b, ds, recon_b)


