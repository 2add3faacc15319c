"""The one training loop of the zoo's image models (optin.zoo: vit-fmnist, resnet-fmnist,
lite0-fmnist; optin.zoo_seg: swin-fmnist-seg): AdamW, linear warm-up then cosine decay, random
horizontal flips, gradient clipping at 1, seeded batch order and flips, a progress bar."""
from __future__ import annotations

import math


def train_images(model, x, y, hp: dict, desc: str, steps: int | None = None, flip_labels: bool = False) -> None:
    """Train `model` (labels=... gives .loss) on images x [N, C, H, W] and labels y in place, then
    set it to eval. hp: lr, weight_decay, warmup (fraction of steps), epochs, batch_size, seed.
    steps: stop after that many (a fine-tune shorter than an epoch); None: every epoch in full.
    flip_labels: the labels are per-pixel maps [N, H, W], flipped with their image."""
    import torch
    from tqdm.auto import tqdm

    opt = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    steps = steps or hp["epochs"] * math.ceil(len(y) / hp["batch_size"])
    warm = max(1, int(hp["warmup"] * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    model.train()
    bar = tqdm(total=steps, desc=desc, unit="step")
    rng = torch.Generator().manual_seed(hp["seed"])
    try:
        for _ in range(hp["epochs"]):
            for idx in torch.randperm(len(y), generator=rng).split(hp["batch_size"]):
                if bar.n >= steps:
                    break
                xb, yb = x[idx], y[idx].long()
                flip = torch.rand(len(idx), generator=rng) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
                if flip_labels:
                    yb = torch.where(flip[:, None, None], yb.flip(-1), yb)
                loss = model(pixel_values=xb, labels=yb).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step(); sched.step(); opt.zero_grad()
                bar.update(1); bar.set_postfix(loss=f"{loss.item():.3f}")
    finally:
        bar.close()
    model.eval()
