"""Calibration (and evaluation) data as users hold it, for `optin.prune_model`: model-ready batches.

Accepted: an iterable of batches (dicts of tensors, the model's input names, `labels` where a
method or an accuracy needs them); a `datasets.Dataset` (text, pair and label columns guessed as
for files, or named through `DataOptions`; an Image column for vision); or a list of examples:
`(text, label)`, `(text, pair, label)`, `(image, label)`, or bare texts / images (no labels).
String labels are matched to the model's label names as the CLI does (optin.labels).
"""
from __future__ import annotations

import torch

from .data import NO_OPTIONS, DataOptions, _records_to_examples, make_batches
from .errors import BadData, BadInput
from .labels import encode_labels


def is_batches(data) -> bool:
    first = data[0] if isinstance(data, (list, tuple)) and data else None
    return isinstance(first, dict) and all(torch.is_tensor(v) for v in first.values())


def as_batches(data, adapter, processor=None, batch_size: int = 32, max_length: int = 128,
               opts: DataOptions = NO_OPTIONS, where: str = "calibration data") -> list[dict]:
    """Model-ready batches from any of the accepted forms (see the module docstring)."""
    if data is None:
        return []
    if not isinstance(data, (list, tuple)) and not _is_dataset(data):
        data = list(data)  # a generator or DataLoader of batches
    if is_batches(data):
        missing = [n for n in adapter.input_names() if n not in data[0] and n != "token_type_ids"]
        if missing:
            raise BadInput(f"{where}: batches lack {missing}; the model reads {adapter.input_names()}")
        return list(data)
    examples = _examples(data, adapter, opts, where)
    if not examples:
        raise BadData(f"{where} is empty; give at least one example")
    labelled = all(e[2] is not None for e in examples)
    if labelled:
        c = adapter.config
        examples = encode_labels(examples, {str(k): int(v) for k, v in (c.label2id or {}).items()}, c.num_labels,
                                 where, opts.label_map)
    return make_batches(_processor(adapter, processor), examples, batch_size, max_length, with_labels=labelled)


def take(batches: list[dict], n: int) -> list[dict]:
    """The first n examples of a list of batches (the last batch cut short)."""
    out, left = [], n
    for b in batches:
        if left <= 0:
            break
        size = len(next(iter(b.values())))
        out.append(b if size <= left else {k: v[:left] for k, v in b.items()})
        left -= size
    return out


def examples_in(batches: list[dict]) -> int:
    return sum(len(next(iter(b.values()))) for b in batches)


def _is_dataset(data) -> bool:
    return type(data).__module__.startswith("datasets.") and hasattr(data, "features")


def _examples(data, adapter, opts, where):
    if _is_dataset(data):
        rows = [dict(r) for r in data]
        if adapter.modality == "image":
            from .images import image_records

            col = next((c for c, f in data.features.items() if type(f).__name__ == "Image"), None)
            if col is None:
                raise BadData(f"{where}: the dataset has no Image column ({sorted(data.features)}); give images")
            return image_records(rows, col, where, opts.label_column)[0]
        return _records_to_examples(rows, where, opts)[0]
    out = []
    for i, e in enumerate(data):
        if isinstance(e, (tuple, list)) and len(e) in (2, 3):
            x, pair, label = (e[0], None, e[1]) if len(e) == 2 else e
        else:
            x, pair, label = e, None, None
        if adapter.modality == "text" and not isinstance(x, str):
            raise BadData(f"{where}: example {i + 1} is a {type(x).__name__}, not a text; give texts, "
                          "(text, label) or (text, pair, label)")
        out.append((x, pair, label))
    return out


def _processor(adapter, processor):
    if processor is not None:
        return processor
    if adapter.modality == "image":
        from .images import ImageProcessor

        return ImageProcessor.for_model(adapter.config)
    raise BadInput("text examples need the model's tokenizer: pass processor=AutoTokenizer.from_pretrained(...)")
