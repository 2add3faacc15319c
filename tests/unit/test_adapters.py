"""Every registered family: block-wise forward, masking = narrowing, reload, registry errors."""
import pytest
import torch

from conftest import awkward_spec, masked_and_narrowed, tiny_batches, tiny_model
from optin.adapters import adapter_for
from optin.errors import UnsupportedModel
from optin.narrow import narrow


def _inputs(b):
    return {k: v for k, v in b.items() if k != "labels"}


def _awkward_spec(model_type):
    """Non-uniform heads, a layer with no heads, a layer with no neurons."""
    return awkward_spec(model_type)


def test_blockwise_forward_matches_model(family):
    model = tiny_model(family)
    b = tiny_batches(model_type=family)[0]
    assert torch.allclose(adapter_for(model).forward(b), model(**_inputs(b)).logits, atol=1e-6)


def test_narrowed_equals_masked(family):
    model = tiny_model(family)
    spec = _awkward_spec(family)
    dense, masked, narrowed = masked_and_narrowed(model, spec, _inputs(tiny_batches(model_type=family)[0]))
    assert (masked - narrowed).abs().max() <= 1e-5
    assert (dense - narrowed).abs().max() > 1e-3  # the mask really changed the model
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < sum(p.numel() for p in tiny_model(family).parameters())


def test_load_pruned_roundtrip(family, tmp_path):
    from optin.io import load_pruned, save_pruned

    model = tiny_model(family)
    spec = _awkward_spec(family)
    narrow(adapter_for(model), spec)
    save_pruned(model, None, spec, str(tmp_path))
    again = load_pruned(str(tmp_path))
    b = _inputs(tiny_batches(model_type=family)[1])
    assert torch.equal(model(**b).logits, again(**b).logits)


def test_unsupported_family_lists_supported():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    m = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedModel, match="supported: bert, .*distilbert"):
        adapter_for(m)
