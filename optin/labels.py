"""Data labels → a model's class ids.

A label is a class id (an int, or a string or float that is one: "1", 1.0) or a name, matched
case-insensitively to the model's label names (config.label2id / id2label). `--label-map
pos=1,neg=0` maps the data's labels first; its values are class ids or the model's label names.
Unmatched labels are collected, so one error names all of them with the model's names and the fix.
"""
from __future__ import annotations

import re

from .errors import BadData, BadInput

DEFAULT_NAME = re.compile(r"LABEL_\d+$")  # transformers' placeholder names: the model has none of its own
# labels of sentence-pair tasks (MNLI, RTE, QQP, MRPC, PAWS): such a model reads text pairs
PAIR_TASK = {"entailment", "contradiction", "not_entailment", "duplicate", "not_duplicate",
             "equivalent", "not_equivalent", "paraphrase", "not_paraphrase"}
SHOWN = 6  # unmatched labels named in one error line


def parse_label_map(text: str | None) -> dict[str, str] | None:
    """'pos=1,neg=0' → {'pos': '1', 'neg': '0'} (values resolved against the model later)."""
    if text is None:
        return None
    out = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise BadInput(f"--label-map {text!r}: {item.strip()!r} is not DATA_LABEL=CLASS; write e.g. "
                           "--label-map pos=1,neg=0 (class ids or the model's label names)")
        out[key.strip()] = value.strip()
    if not out:
        raise BadInput("--label-map is empty; write e.g. --label-map pos=1,neg=0")
    return out


def _as_id(value) -> int | None:
    """An int-like label (1, "1", "-1", 1.0, "1.0") as an int; None for a name."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        f = float(str(value).strip())
    except ValueError:
        return None
    return int(f) if f.is_integer() else None


def names_line(label2id: dict[str, int], num_labels: int) -> str:
    """The model's label names as they appear in messages: '0=rotten, 1=fresh'."""
    by_id = {v: k for k, v in label2id.items()}
    if not by_id or all(DEFAULT_NAME.match(str(n)) for n in by_id.values()):
        return f"it has no label names, only class ids 0..{num_labels - 1}"
    return ", ".join(f"{i}={by_id.get(i, '?')}" for i in range(num_labels))


def pair_task_labels(config) -> list[str]:
    """The model's label names if they name a sentence-pair task, else []."""
    names = [str(n) for n in (getattr(config, "id2label", None) or {}).values()]
    return names if any(re.sub(r"[\s-]+", "_", n.strip().lower()) in PAIR_TASK for n in names) else []


def _resolve_map(label_map: dict, lower: dict, label2id: dict, num_labels: int) -> dict[str, int]:
    out = {}
    for key, value in label_map.items():
        y = _as_id(value)
        if y is None:
            y = lower.get(str(value).lower())
        if y is None or not 0 <= y < num_labels:
            raise BadInput(f"--label-map {key}={value}: {value!r} is neither a class id 0..{num_labels - 1} nor one "
                           f"of the model's label names ({names_line(label2id, num_labels)})")
        out[str(key).lower()] = y
    return out


def encode_labels(examples, label2id: dict[str, int], num_labels: int, where: str, label_map: dict | None = None):
    """Examples with their labels as the model's class ids; BadData naming every unmatched label."""
    lower = {str(k).lower(): int(v) for k, v in label2id.items()}
    mapped = _resolve_map(label_map, lower, label2id, num_labels) if label_map else {}
    out, unmatched = [], {}
    for text, pair, label in examples:
        key = str(label).strip().lower()
        y = mapped.get(key)
        if y is None:
            y = _as_id(label)
        if y is None:
            y = lower.get(key)
        if y is None:
            unmatched[str(label)] = None
            continue
        if not 0 <= y < num_labels:
            raise BadData(f"{where}: label {y} is outside the model's {num_labels} classes (0..{num_labels - 1}); "
                          "the data does not match this model's classification head (or map it with --label-map)")
        out.append((text, pair, y))
    if unmatched:
        raise BadData(_unmatched_line(list(unmatched), where, label2id, num_labels))
    return out


def _unmatched_line(labels: list[str], where: str, label2id: dict, num_labels: int) -> str:
    shown = ", ".join(repr(u) for u in labels[:SHOWN])
    if len(labels) > SHOWN:
        shown += f" and {len(labels) - SHOWN} more"
    example = ",".join(f"{u}={i}" for i, u in enumerate(sorted(labels)[:num_labels]))
    verb = "label {} is not one of" if len(labels) == 1 else "labels {} are not among"
    return (f"{where}: {verb.format(shown)} the model's labels "
            f"({names_line(label2id, num_labels)}); map them with --label-map, e.g. --label-map {example} "
            "(values: class ids or the model's label names)")
