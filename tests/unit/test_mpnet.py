"""MPNet's relative-position bias is one table shared by every layer (a column per head). The
family-parametrised tests (test_adapters, test_macs, test_export, test_importance, test_refine)
cover masking = narrowing, reload, MACs and ONNX; here: that the shared bias is what those tests
depend on, and that narrowing keeps the table whole and hands each layer its own kept columns
(real weights: tests/integration/test_mpnet_weights.py)."""
import torch

from conftest import awkward_spec, tiny_batches, tiny_model
from optin.adapters import adapter_for
from optin.masking import mask_hooks
from optin.narrow import narrow


def _inputs(b):
    return {k: v for k, v in b.items() if k != "labels"}


def test_shared_bias_matters_and_stays_whole():
    model = tiny_model("mpnet")
    b = _inputs(tiny_batches(model_type="mpnet")[0])
    table = model.mpnet.encoder.relative_attention_bias.weight.detach().clone()
    dense = model(**b).logits
    with torch.no_grad():  # the bias changes the model: the narrowed = masked test depends on it
        model.mpnet.encoder.relative_attention_bias.weight.zero_()
        assert (model(**b).logits - dense).abs().max() > 1e-3
        model.mpnet.encoder.relative_attention_bias.weight.copy_(table)
    spec = awkward_spec("mpnet")
    narrow(adapter_for(model), spec)
    assert torch.equal(model.mpnet.encoder.relative_attention_bias.weight, table)  # shared: never sliced
    for i, layer in enumerate(model.mpnet.encoder.layer):
        heads = list(spec.heads[i])
        if 0 < len(heads) < 4:
            assert layer.attention.attn.optin_bias_heads.tolist() == heads
        else:
            assert not hasattr(layer.attention.attn, "optin_bias_heads")


def test_each_layer_needs_its_own_kept_columns():
    """A layer keeping heads 1, 2, 3 given columns 0, 1, 2 of the bias (the first k) is wrong."""
    model = tiny_model("mpnet")
    a = adapter_for(model)
    spec = awkward_spec("mpnet")
    b = _inputs(tiny_batches(model_type="mpnet")[0])
    with mask_hooks(a) as state:
        state.set(*spec.masks())
        masked = model(**b).logits
    narrow(a, spec)
    assert (model(**b).logits - masked).abs().max() <= 1e-5
    attn = model.mpnet.encoder.layer[2].attention.attn
    assert attn.optin_bias_heads.tolist() == [1, 2, 3]
    attn.optin_bias_heads = torch.arange(3)
    assert (model(**b).logits - masked).abs().max() > 1e-4
