"""Scoring spread over processes with torch.distributed, as launched by torchrun:

    torchrun --nproc-per-node 2 -m optin.cli prune MODEL --data DATA --flops 0.6 --out DIR

Every rank loads the model and data; the scoring loops take every world-th work item (candidate
or batch) and the partial results are summed with all_reduce. Each item is computed by exactly one
rank and the others contribute exact zeros, so for exact scoring the gathered scores (and the
mask) equal one process's bit for bit. Rank 0 evaluates, searches, narrows and writes; the others
stop after scoring. With `--device cuda` (or auto on GPUs) each rank runs on its LOCAL_RANK GPU
(optin.devices.resolve) and NCCL sums on it; on the CPU, gloo. Without torchrun this is a no-op.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init(device: torch.device | None = None) -> None:
    """Join the process group torchrun describes in the environment (once): NCCL when the ranks
    score on GPUs (device: where this rank runs; None: on a GPU when there is one), else gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        on_gpu = torch.cuda.is_available() if device is None else device.type == "cuda"
        if on_gpu:
            index = device.index if device is not None and device.index is not None else \
                int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(index)
        dist.init_process_group("nccl" if on_gpu else "gloo")


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def shard(items):
    """This rank's share of a list of work items (every world-th, starting at the rank)."""
    return list(items)[rank()::world()]


def reduce_sum(*tensors: torch.Tensor) -> None:
    """Sum each tensor over ranks, in place (on the collective's device, then back)."""
    if not active():
        return
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    for t in tensors:
        buf = t.to(dev)
        dist.all_reduce(buf)
        t.copy_(buf.to(t.device))


def finish() -> None:
    """Leave the group after the last collective; no barrier, so helper ranks exit while rank 0
    goes on to evaluate and write."""
    if active():
        dist.destroy_process_group()
