"""Zoo model `swin-fmnist-seg`: a Swin semantic segmenter (optin.models.swin_seg) trained from
scratch on fmnist-seg (optin.segdata), and the small trained weights the repository ships for it.

Training it takes about 28 minutes on one shared CPU core, more than a CI run should spend on one
zoo model, so the trained weights are shipped in optin/zoo_weights/ (float16 safetensors, 1.2 MB,
with a JSON of how they were made) and the zoo builds the model from them in seconds. The model
*is* the float16-rounded one: every number in the docs was measured on it. To rebuild them:

    python -m optin.zoo_seg --ship     # trains, then rewrites optin/zoo_weights/

With `OPTIN_ZOO_TRAIN=1` the zoo trains instead of reading the shipped weights. (optin.zoo lists
this builder; this module does not import optin.zoo back.)
"""
from __future__ import annotations

import json
import os
import time

from . import shipped

NAME = "swin-fmnist-seg"
WEIGHTS_DIR = shipped.WEIGHTS_DIR
REBUILD = "python -m optin.zoo_seg --ship"
# 64×64 canvases in 4×4 patches: a 16×16 grid, then 8×8 and 4×4 after the patch mergings; windows
# of 4×4 tokens (the last stage's grid is one window); heads of 24 channels
# widths 32, 64, 128 and a 32-wide decoder: 0.58 M parameters (1.2 MB in float16), 0.2-0.5 s per training step
# of 32 on one shared core (embed 48, depths 2-2-4, decoder 64: 2.2 M parameters, 0.9 s)
ARCH = dict(image_size=64, patch_size=4, num_channels=1, embed_dim=32, depths=[2, 2, 2], num_heads=[2, 4, 8],
            window_size=4, mlp_ratio=4.0, drop_path_rate=0.05, decoder_hidden_size=32, classifier_dropout=0.1)
# threads=1: on the shared 2-core machines a 2-thread step measured 12x slower than a 1-thread one;
# 16 epochs of 20,000 canvases (10,000 steps, 27 minutes on one shared core): 53.4% test mIoU (8: 46.1%, 4: 38.0%)
TRAIN = dict(epochs=16, train=20000, batch_size=32, lr=2e-3, weight_decay=0.05, warmup=0.05, seed=0, threads=1)


def _config():
    from .models.swin_seg import SwinSegConfig
    from .segdata import FMNIST_SEG_LABELS

    labels = FMNIST_SEG_LABELS
    return SwinSegConfig(**ARCH, num_labels=len(labels), id2label=dict(enumerate(labels)),
                         label2id={n: i for i, n in enumerate(labels)})


def _processor(cfg):
    from .segdata import SegProcessor

    return SegProcessor(cfg.image_size, cfg.num_channels)


def train(log=print):
    """Train the segmenter on the fmnist-seg train split: AdamW, linear warmup then cosine, random
    horizontal flips of image and label map together, seeded, one torch thread."""
    import numpy as np
    import torch

    from .image_training import train_images
    from .models.swin_seg import SwinSegForSemanticSegmentation
    from .segdata import fmnist_seg

    hp = TRAIN
    threads = torch.get_num_threads()
    torch.set_num_threads(hp["threads"])
    torch.manual_seed(hp["seed"])
    cfg = _config()
    model = SwinSegForSemanticSegmentation(cfg)
    proc = _processor(cfg)
    ex = fmnist_seg(splits=("train",), sizes={"train": hp["train"]}).split("train")
    x = proc([e[0] for e in ex])["pixel_values"]  # 20,000 × 1 × 64 × 64 float32: 328 MB
    y = torch.from_numpy(np.stack([e[2] for e in ex]))  # uint8 label maps (fmnist-seg has no ignored pixels)
    try:
        train_images(model, x, y, hp, f"building {NAME} (train from scratch)", flip_labels=True)
    finally:
        torch.set_num_threads(threads)
    return model.eval(), proc


def _shipped() -> bool:
    return shipped.available(NAME, WEIGHTS_DIR)


def build(out_dir: str, log=print) -> None:
    """The zoo folder: from the shipped weights (checked against their recorded digest and settings),
    or trained (OPTIN_ZOO_TRAIN=1, or no shipped weights)."""
    from .models.swin_seg import SwinSegForSemanticSegmentation

    t0 = time.time()
    if not _shipped():
        model, proc = train(log)
        origin = {"weights": "trained by this build", "train_seconds": time.time() - t0}
    else:
        sd, info = shipped.load(NAME, {"arch": ARCH, "train": TRAIN}, REBUILD, WEIGHTS_DIR)
        cfg = _config()
        model = SwinSegForSemanticSegmentation(cfg)
        model.load_state_dict(sd, strict=True)
        model.eval()
        proc = _processor(cfg)
        origin = {"weights": f"shipped: optin/zoo_weights/{NAME}.safetensors (float16)", **info}
    model.save_pretrained(out_dir)
    proc.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "optin_zoo.json"), "w") as fh:
        json.dump({"name": NAME, "base": "none (trained from scratch)", "data": "fmnist-seg (train split)",
                   "max_length": model.config.image_size, "architecture": ARCH, "hyperparameters": TRAIN, **origin},
                  fh, indent=2)


def ship(log=print) -> str:
    """Train, then write optin/zoo_weights/swin-fmnist-seg.{safetensors,json} (float16 weights)."""
    t0 = time.time()
    model, _ = train(log)
    return shipped.write(NAME, model, {"arch": ARCH, "train": TRAIN}, time.time() - t0, REBUILD, log, WEIGHTS_DIR)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--ship"]:
        raise SystemExit("usage: python -m optin.zoo_seg --ship  (trains, then rewrites optin/zoo_weights/)")
    ship()
