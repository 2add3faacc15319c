"""Labelled examples, below every data source (optin.data for text, optin.images for images).

An example is a (input, text_pair, label) triple: the input is a text, an image array or an
image path; text_pair is None when the source has no pair column; labels stay as the source
wrote them (ints or strings) until optin.labels encodes them as the model's class ids.

A source either has splits of its own (Rotten Tomatoes, Fashion-MNIST, an `hf:` dataset with a
train and a validation/test split) or is one pool of examples, the split "all" (a CSV/JSONL
file, an image folder). `calib_test` turns a pool into calibration and test examples.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from .errors import BadData

TEXT_COLUMNS = ("text", "sentence", "sentence1", "text_a", "premise", "question")
PAIR_COLUMNS = ("text_pair", "sentence2", "text_b", "hypothesis")
LABEL_COLUMNS = ("label", "labels", "category")
POOL = "all"  # the one split of a source without splits of its own


@dataclass
class TextDataset:
    """Named splits of examples (text or image; the name is historical)."""

    name: str
    splits: dict[str, list[tuple[object, str | None, object]]]
    label_names: list[str] | None = None
    meta: dict = field(default_factory=dict)  # modality ("image"; default text), columns read

    def split(self, name: str) -> list:
        if name not in self.splits or not self.splits[name]:
            raise BadData(f"dataset {self.name!r} has no examples in split {name!r}; "
                          f"available: {sorted(k for k, v in self.splits.items() if v)}")
        return self.splits[name]

    @property
    def pooled(self) -> bool:
        return set(self.splits) == {POOL}

    def shuffled_pool(self, seed: int) -> list:
        """Every example of a pooled source, in a seeded order (a file sorted by label must not
        give a calibration set or an --eval-limit subset of one class)."""
        ex = list(self.split(POOL))
        random.Random(seed).shuffle(ex)
        return ex


def pick_column(columns, candidates, what: str, where: str, named: str | None = None,
                option: str | None = None, required: bool = True) -> str | None:
    """The column to read: the one the user named, else the first of the usual names.
    A named column that is missing is an error even for the optional pair column."""
    found = ", ".join(sorted(map(str, columns)))
    if named is not None:
        if named not in columns:
            raise BadData(f"{where}: no column {named!r} ({option} {named}); its columns are: {found}")
        return named
    for c in candidates:
        if c in columns:
            return c
    if not required:
        return None
    raise BadData(f"{where}: no {what} column; expected one of {list(candidates)}, found {sorted(columns)}; "
                  f"name yours with {option}")


def split_calib_test(examples, calib: int, seed: int) -> dict:
    """A pool has no fixed split: a seeded shuffle gives calibration first, evaluation after."""
    ex = list(examples)
    random.Random(seed).shuffle(ex)
    n_cal = min(calib, max(1, len(ex) // 2)) if len(ex) > 1 else len(ex)
    return {"calib": ex[:n_cal], "test": ex[n_cal:] or ex[:n_cal]}


def calib_test(ds: TextDataset, calib: int, seed: int) -> TextDataset:
    """The dataset with calib and test splits: a pool is split (split_calib_test), fixed splits stay."""
    if not ds.pooled:
        return ds
    return TextDataset(ds.name, split_calib_test(ds.split(POOL), calib, seed), ds.label_names, ds.meta)
