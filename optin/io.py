"""Model loading, the pruned-model folder, and all-or-nothing output folders.

A pruned folder holds model.safetensors (narrowed weights), config.json (the original config:
transformers keeps one global head count, so from_pretrained cannot rebuild a non-uniform
model), spec.json (what was kept) and the processor (the tokenizer; preprocessor_config.json for
images). `load_pruned` rebuilds from the spec. The folder also carries remote code and the
per-layer widths in config.json (optin.remote_code), so transformers' from_pretrained with
trust_remote_code=True rebuilds it too, without optin.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager

from .errors import BadInput, DamagedFile, OptinError, UnsupportedModel
from .files import reason
from .spec import PruneSpec


def load_model(path: str):
    """(model, processor) of a classifier, after checking that a family adapter exists. The
    processor is the family's input encoder: a tokenizer for text, optin.images.ImageProcessor for images.
    Damaged files (config, weights, tokenizer) are DamagedFile errors naming the file (optin.files)."""
    from .adapters import ADAPTERS, adapter_for
    from .files import check_model_files, check_processor_files

    fix = folder_fix(path)
    check_model_files(path, fix)  # before any library parses them: one line, not a traceback
    check_processor_files(path, fix)
    config = _config(path)
    if config.model_type not in ADAPTERS:
        raise UnsupportedModel(f"model type {config.model_type!r} is not supported; supported: "
                               f"{', '.join(sorted(ADAPTERS))}")
    cls = ADAPTERS[config.model_type]
    try:  # the processor first: it is quick, and fails before the weights' progress bar
        processor = cls.load_processor(path, config)
    except OptinError:
        raise
    except Exception as e:  # tokenizers raises bare Exceptions: one line, naming the folder
        raise BadInput(f"cannot load the tokenizer (processor) of {path}: {reason(e)}; {fix} "
                       "(tokenizer.json, tokenizer_config.json, vocab.txt, ...)") from e
    try:
        model = cls.auto_model().from_pretrained(path).eval()
    except OSError as e:  # no weights file in the folder (damaged ones were caught above)
        raise BadInput(f"cannot load the weights of {path}: {reason(e)}; {fix}") from e
    adapter_for(model)  # fails early on a non-classifier
    return model, processor


def _config(path: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise BadInput(f"cannot load model {path!r}: {str(e).splitlines()[0]}; give a Hugging Face model "
                       "folder, a hub id or a zoo name") from e


def folder_fix(path: str) -> str:
    """What to do about a damaged file in model folder `path`."""
    from .zoo import cache_dir

    if os.path.isfile(os.path.join(path, "spec.json")):
        return "run `optin prune` again to rewrite the folder"
    if os.path.abspath(path).startswith(os.path.abspath(cache_dir()) + os.sep):
        return f"delete {path} and optin rebuilds it on next use"
    return "restore it from the original model (copy or download it again)"


def save_pruned(model, tokenizer, spec: PruneSpec, out_dir: str, extra: dict | None = None) -> None:
    from safetensors.torch import save_model

    from .adapters import adapter_for
    from .remote_code import write_remote_code

    os.makedirs(out_dir, exist_ok=True)
    save_model(model, os.path.join(out_dir, "model.safetensors"))
    cfg = model.config.to_dict()
    cfg.pop("optin_pruned", None)
    # stale copies go (a model rebuilt by load_pruned has them); then what lets transformers alone
    # rebuild the narrowed model (from_pretrained with trust_remote_code=True)
    for key in ("optin_narrowed", "auto_map"):
        cfg.pop(key, None)
    cfg.update(write_remote_code(out_dir, adapter_for(model), spec))
    with open(os.path.join(out_dir, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
    with open(os.path.join(out_dir, "spec.json"), "w") as fh:
        fh.write(spec.to_json())
    if extra is not None:
        with open(os.path.join(out_dir, "optin.json"), "w") as fh:
            json.dump(extra, fh, indent=2)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)


def load_pruned(path: str):
    """Rebuild a pruned model from its folder: config → dense skeleton → narrow(spec) → weights."""
    from safetensors.torch import load_model

    from .adapters import ADAPTERS, adapter_for
    from .files import check_model_files
    from .narrow import narrow

    spec_file = os.path.join(path, "spec.json")
    if not os.path.isfile(spec_file):
        raise BadInput(f"{path!r} is not a pruned-model folder (no spec.json); run `optin prune` first")
    spec = read_spec(spec_file)
    fix = folder_fix(path)
    check_model_files(path, fix)
    config = _config(path)
    if config.model_type not in ADAPTERS:
        raise UnsupportedModel(f"{path}: model type {config.model_type!r} is not supported; supported: "
                               f"{', '.join(sorted(ADAPTERS))}")
    model = ADAPTERS[config.model_type].from_config(config)
    weights = os.path.join(path, "model.safetensors")
    if not os.path.isfile(weights):
        raise BadInput(f"{weights} is missing; {fix}")
    try:
        narrow(adapter_for(model), spec)
        load_model(model, weights, strict=True)
    except (IndexError, RuntimeError, ValueError) as e:  # kept units or tensor shapes that do not fit
        raise DamagedFile(f"{path}: spec.json, config.json and model.safetensors do not fit together "
                          f"({reason(e)}); {fix}") from e
    return model.eval()


def read_spec(path: str) -> PruneSpec:
    """spec.json → PruneSpec; DamagedFile naming it if it is not JSON or not a spec."""
    from .files import damaged

    try:
        with open(path, encoding="utf-8") as fh:
            return PruneSpec.from_json(fh.read())
    except (OSError, KeyError, TypeError, ValueError) as e:  # ValueError: JSON and UTF-8 errors
        raise damaged(path, f"not a pruning spec: {reason(e)}") from e


def read_json(path: str, default=None):
    """The parsed file, `default` if it does not exist; a damaged file is a DamagedFile naming it."""
    from .files import read_json as read

    return read(path, default)


def write_json(path: str, data: dict) -> None:
    """Write to a temporary name and rename: a reader never sees half a report."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, default=_jsonable)
        fh.write("\n")
    os.replace(tmp, path)


def _jsonable(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


@contextmanager
def staged_dir(out_dir: str):
    """Yield a temporary folder beside out_dir; on success it replaces out_dir, on error it vanishes."""
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", dir=parent)
    try:
        yield tmp
        old = None
        if os.path.exists(out_dir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old.", dir=parent)
            os.rmdir(old)
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
