"""Small trained zoo weights the repository ships: optin/zoo_weights/NAME.safetensors (float16) with
NAME.json (the settings they were trained with, their sha256, the command that rebuilds them).

Training the small from-scratch zoo models takes 5-28 minutes each on one shared core, more than
a CI run should spend, and a rebuild on another machine is not bit-identical (float kernels differ
by CPU), so every table would move a little. Shipping the weights makes every checkout load the
same model in seconds. The model *is* the float16-rounded one. `OPTIN_ZOO_TRAIN=1` trains instead.
This module knows no model family and imports nothing of the zoo.
"""
from __future__ import annotations

import hashlib
import json
import os

from .errors import DamagedFile

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zoo_weights")


def _paths(name: str, weights_dir: str | None = None) -> tuple[str, str]:
    d = weights_dir or WEIGHTS_DIR
    return os.path.join(d, f"{name}.safetensors"), os.path.join(d, f"{name}.json")


def jsonable(settings: dict) -> dict:
    """`settings` as the JSON holds them (tuples → lists), for comparing with a recorded copy."""
    return json.loads(json.dumps(settings))


def digest(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def available(name: str, weights_dir: str | None = None) -> bool:
    """Shipped weights exist for `name` and OPTIN_ZOO_TRAIN=1 does not ask for training."""
    return os.environ.get("OPTIN_ZOO_TRAIN") != "1" and all(os.path.isfile(p) for p in _paths(name, weights_dir))


def load(name: str, settings: dict, rebuild: str, weights_dir: str | None = None) -> tuple[dict, dict]:
    """(float32 state dict, the JSON) of the shipped weights; DamagedFile when the file's digest or
    the recorded settings differ from `settings` (a truncated file, or code changed since shipping)."""
    from safetensors.torch import load_file

    path, meta = _paths(name, weights_dir)
    try:
        with open(meta) as fh:
            info = json.load(fh)
    except (OSError, ValueError) as e:
        raise DamagedFile(f"{meta} is unreadable ({type(e).__name__}); restore it from git, or rebuild: {rebuild}") from e
    if info.get("sha256") != digest(path) or any(info.get(k) != v for k, v in jsonable(settings).items()):
        raise DamagedFile(f"{path} does not match {meta} (digest or settings differ); restore both from git, "
                          f"or rebuild them: {rebuild}")
    return {k: v.float() if v.is_floating_point() else v for k, v in load_file(path).items()}, info


def write(name: str, model, settings: dict, train_seconds: float | None, rebuild: str, log=print,
          weights_dir: str | None = None) -> str:
    """Write NAME.safetensors (the model's state dict in float16) and NAME.json."""
    from safetensors.torch import save_file

    path, meta = _paths(name, weights_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()},
              path)
    seconds = None if train_seconds is None else round(train_seconds)  # None: not recorded by that build
    info = {**jsonable(settings), "train_seconds": seconds, "sha256": digest(path), "rebuild": rebuild}
    with open(meta, "w") as fh:
        json.dump(info, fh, indent=2)
    log(f"optin: wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
    return path
