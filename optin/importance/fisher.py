"""Fisher importance of Kwon et al. 2022 ("A Fast Post-Training Pruning Framework for
Transformers", §4.2): the squared gradient of the labelled cross-entropy with respect to each
head and neuron mask variable, summed over calibration examples (one example at a time, so it
is the empirical Fisher diagonal rather than the squared batch gradient).

`fisher-batch`: the batched form of Kwon et al.'s code: the squared gradient of each calibration
batch's mean loss, summed over batches. One forward and backward pass per batch instead of per
example, so cheaper; averaging the gradient over the batch before squaring drops what the
examples disagree on, so it is a different (noisier) estimate of the Fisher diagonal."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..masking import mask_variables
from . import Scores, register


def single_examples(batches):
    """Split batches into single examples, padded ones (with an attention_mask) trimmed to their own length."""
    for b in batches:
        for j in range(len(b["labels"])):
            if "attention_mask" not in b:  # images: nothing to trim
                yield {k: v[j:j + 1] for k, v in b.items()}
                continue
            n = int(b["attention_mask"][j].sum())
            yield {k: (v[j:j + 1, :n] if v.dim() == 2 else v[j:j + 1]) for k, v in b.items()}


def mask_gradients(adapter, batches, desc: str = "mask gradients"):
    """Per calibration example: gradients of its labelled cross-entropy with respect to the head
    mask [layers, heads] and the neuron mask [layers, ffn], both all ones (the dense model)."""
    total = sum(len(b["labels"]) for b in batches)
    with mask_variables(adapter) as (hm, nm):
        for ex in tqdm(single_examples(batches), total=total, desc=desc, unit="ex"):
            loss = torch.nn.functional.cross_entropy(adapter.forward(ex).float(), ex["labels"])
            gh, gn = torch.autograd.grad(loss, [hm, nm], allow_unused=True, materialize_grads=True)  # CNN: no heads
            yield gh.detach(), gn.detach()


def _zeros(adapter):
    d = adapter.dims()
    dev = next(adapter.model.parameters()).device
    return torch.zeros(d.num_layers, d.num_heads, device=dev), torch.zeros(d.num_layers, d.ffn_size, device=dev)


@register("fisher", gradients=True)
def fisher(adapter, batches, cfg):
    h_acc, n_acc = _zeros(adapter)
    for gh, gn in mask_gradients(adapter, batches, "fisher scores"):
        h_acc += gh ** 2
        n_acc += gn ** 2
    return Scores(h_acc.cpu(), n_acc.cpu(), {"method": "fisher", "examples": sum(len(b["labels"]) for b in batches)})


@register("fisher-batch", gradients=True)
def fisher_batch(adapter, batches, cfg):
    h_acc, n_acc = _zeros(adapter)
    with mask_variables(adapter) as (hm, nm):
        for b in tqdm(batches, desc="fisher scores (batched)", unit="batch"):
            loss = torch.nn.functional.cross_entropy(adapter.forward(b).float(), b["labels"])
            gh, gn = torch.autograd.grad(loss, [hm, nm], allow_unused=True, materialize_grads=True)
            h_acc += gh ** 2
            n_acc += gn ** 2
    return Scores(h_acc.cpu(), n_acc.cpu(), {"method": "fisher-batch", "batches": len(batches),
                                             "examples": sum(len(b["labels"]) for b in batches)})
