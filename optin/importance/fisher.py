"""Fisher importance of Kwon et al. 2022 ("A Fast Post-Training Pruning Framework for
Transformers", §4.2): the squared gradient of the labelled cross-entropy with respect to each
head and neuron mask variable, summed over calibration examples (one example at a time, so it
is the empirical Fisher diagonal rather than the squared batch gradient)."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..masking import mask_hooks
from . import Scores, register


def single_examples(batches):
    """Split padded batches into single examples trimmed to their own length."""
    for b in batches:
        for j in range(b["input_ids"].shape[0]):
            n = int(b["attention_mask"][j].sum())
            yield {k: (v[j:j + 1, :n] if v.dim() == 2 else v[j:j + 1]) for k, v in b.items()}


@register("fisher")
def fisher(adapter, batches, cfg):
    d = adapter.dims()
    hm = torch.ones(d.num_layers, d.num_heads, requires_grad=True)
    nm = torch.ones(d.num_layers, d.ffn_size, requires_grad=True)
    h_acc, n_acc = torch.zeros_like(hm), torch.zeros_like(nm)
    params = [p for p in adapter.model.parameters() if p.requires_grad]
    for p in params:  # gradients only for the masks
        p.requires_grad_(False)
    total = sum(b["input_ids"].shape[0] for b in batches)
    try:
        with mask_hooks(adapter) as state:
            state.set(hm, nm)
            for ex in tqdm(single_examples(batches), total=total, desc="fisher scores", unit="ex"):
                logits = adapter.forward(ex)
                loss = torch.nn.functional.cross_entropy(logits, ex["labels"])
                gh, gn = torch.autograd.grad(loss, [hm, nm])
                h_acc += gh.detach() ** 2
                n_acc += gn.detach() ** 2
    finally:
        for p in params:
            p.requires_grad_(True)
    return Scores(h_acc, n_acc, {"method": "fisher", "examples": total})
