"""Models and inputs for export, parity and timing, read from a model folder.

A folder is either a pruned one (spec.json, optin.json: rebuilt with `optin.load_pruned`) or a
dense Hugging Face folder / zoo name. Parity runs on real calibration snippets from the data
the model was pruned with; timing uses rows of real token ids exactly `seq` long with every
position attended, so that padding cannot make a model look faster than it is.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

import torch

from optin.errors import OptinError


@dataclass
class Loaded:
    model: torch.nn.Module
    tokenizer: object | None
    path: str                      # folder the weights came from
    pruned: bool
    meta: dict = field(default_factory=dict)   # optin.json of a pruned folder

    @property
    def input_names(self) -> list[str]:
        return input_names(self.model)


def input_names(model) -> list[str]:
    """ONNX inputs, as the model's family adapter names them (optin.adapters.Adapter.input_names)."""
    from optin.adapters import adapter_for

    return adapter_for(model).input_names()


def source_id(path: str) -> str:
    """How export.json names a model's source: an absolute folder, or a hub id as given."""
    return os.path.abspath(path) if os.path.isdir(path) else path


def is_pruned(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "spec.json"))


def load(model_dir: str, log=print) -> Loaded:
    """A pruned folder → its narrowed model; anything else → the dense model (zoo names resolved)."""
    from optin.io import load_model, load_pruned, read_json
    from optin.zoo import resolve_model

    if os.path.isdir(model_dir) and is_pruned(model_dir):
        model = load_pruned(model_dir)
        return Loaded(model, _tokenizer(model_dir, model), model_dir, True,
                      read_json(os.path.join(model_dir, "optin.json"), {}))
    exp = read_json(os.path.join(model_dir, "export.json"))
    if exp and not os.path.exists(os.path.join(model_dir, "config.json")):
        # an export folder of a dense model (DIR/dense): weights stay at the source it names
        src = load(exp["source"], log=log)
        src.meta = {"data": exp.get("data"), "max_length": exp.get("max_length"), "split": exp.get("split")}
        return src
    path = resolve_model(model_dir, log=log)
    model, tok = load_model(path)
    return Loaded(model, tok, path, False, {})


def _tokenizer(path: str, model):
    """The folder's processor (tokenizer, or image processor) through the family adapter."""
    from optin.adapters import adapter_for
    from optin.files import check_processor_files
    from optin.io import folder_fix

    check_processor_files(path, folder_fix(path))  # a damaged one is an error, not a random-token fallback
    try:
        return type(adapter_for(model)).load_processor(path, model.config)
    except (OSError, ValueError, TypeError):
        return None  # tests save pruned folders without one; callers fall back to random ids


@functools.lru_cache(maxsize=8)
def calib_examples(data: str | None, n: int):
    """(examples, None) or (None, why not): the calibration split of `data`, else its test split.
    Cached: a profile asks once per measured shape, and reading the corpus takes seconds."""
    from optin.data import load_data

    if not data:
        return None, "no data spec in optin.json"
    try:
        ds = load_data(data, calib=n)
        try:
            ex = ds.split("calib")
        except OptinError:
            ex = ds.split("test")
        return tuple(ex[:n]), None
    except OptinError as e:
        return None, str(e)


def parity_batches(m: Loaded, n: int = 64, batch_size: int = 16, data: str | None = None, seed: int = 0,
                   limits=None):
    """Tokenised batches of up to n real samples (padding and ragged lengths included, so the
    ONNX attention mask is exercised), and a line saying where they came from.
    limits ((min batch, min seq), (max batch, max seq)): an engine profile's range to stay inside."""
    from optin.data import make_batches

    (lo_b, lo_s), (hi_b, hi_s) = limits or ((1, 1), (batch_size, 1 << 30))
    data = data or m.meta.get("data")
    batch_size = max(lo_b, min(batch_size, hi_b))
    max_len = min(int(m.meta.get("max_length") or 128), hi_s)
    names = m.input_names
    ex, why = calib_examples(data, n) if m.tokenizer is not None else (None, "no tokenizer in the folder")
    if ex:
        bs = [{k: b[k] for k in names if k in b} for b in make_batches(m.tokenizer, ex, batch_size, max_len, False)]
        bs = [_pad_to(b, lo_s, getattr(m.tokenizer, "pad_token_id", None) or 0) for b in bs if _rows(b) >= lo_b]
        if bs:
            return bs, f"{sum(_rows(b) for b in bs)} calibration samples of {data}"
        why = f"fewer than {lo_b} samples"
    g = torch.Generator().manual_seed(seed)
    out, left = [], n
    while left > 0:
        b = max(lo_b, min(batch_size, left))
        s = int(torch.randint(max(lo_s, 8), max(lo_s, 8, min(max_len, 64)) + 1, (1,), generator=g))
        out.append(random_batch(m.model.config, b, s, g, names, ragged=True, model=m.model))
        left -= b
    return out, f"{n} random-token samples (real data unavailable: {why})"


def _rows(batch: dict) -> int:
    return len(next(iter(batch.values())))


def _pad_to(batch: dict, seq: int, pad_id: int) -> dict:
    """Right-pad to at least seq tokens (attention_mask 0): an engine's minimum sequence length."""
    if "input_ids" not in batch:
        return batch  # images: no sequence axis to pad
    extra = seq - batch["input_ids"].shape[1]
    if extra <= 0:
        return batch
    fill = {"input_ids": pad_id}
    return {k: torch.nn.functional.pad(v, (0, extra), value=fill.get(k, 0)) for k, v in batch.items()}


def random_batch(config, batch: int, seq: int, g, names, ragged: bool = False, model=None) -> dict:
    """Random inputs of the model's family (Adapter.random_inputs); without a model, token ids."""
    if model is not None:
        from optin.adapters import adapter_for

        return adapter_for(model).random_inputs(batch, seq, g, ragged)
    ids = torch.randint(5, max(6, config.vocab_size), (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    if ragged:
        for j in range(batch):
            mask[j, int(torch.randint(2, seq + 1, (1,), generator=g)):] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names:
        out["token_type_ids"] = torch.zeros_like(ids)
    return out


def fixed_inputs(m: Loaded, batch: int, seq: int, data: str | None = None) -> tuple[dict, str]:
    """A [batch, seq] input of real token ids, every row exactly seq tokens and fully attended:
    consecutive snippets are concatenated ([CLS] a [SEP] b [SEP] …) and cut at seq."""
    names = m.input_names
    data = data or m.meta.get("data")
    ex, why = calib_examples(data, 4 * batch) if m.tokenizer is not None else (None, "no tokenizer")
    if ex and hasattr(m.tokenizer, "encode_examples"):  # images: every example has the same tokens
        from optin.data import make_batches

        rows = (list(ex) * batch)[:batch]
        return make_batches(m.tokenizer, rows, batch, seq, with_labels=False)[0], f"real images of {data}"
    if ex:
        tok = m.tokenizer
        stream = [t for e in ex for t in tok(e[0], add_special_tokens=False)["input_ids"] + [tok.sep_token_id]]
        body = seq - 1
        while len(stream) < batch * body:
            stream = stream + stream
        rows = [[tok.cls_token_id] + stream[i * body:(i + 1) * body] for i in range(batch)]
        ids = torch.tensor(rows, dtype=torch.long)
        out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if "token_type_ids" in names:
            out["token_type_ids"] = torch.zeros_like(ids)
        return out, f"real tokens of {data}"
    return random_batch(m.model.config, batch, seq, torch.Generator().manual_seed(0), names, model=m.model), \
        f"random tokens ({why})"


def to_numpy(batch: dict, names) -> dict:
    return {k: batch[k].numpy() for k in names}
