"""The floors must be fair floors: under the global search they keep heads *and* neurons."""
import pytest

from conftest import tiny_batches, tiny_model
from optin.adapters import adapter_for
from optin.importance import ScoreConfig, get_method
from optin.prune import cost_model_for
from optin.search import search


@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_floor_keeps_heads_and_neurons(method):
    a = adapter_for(tiny_model("bert"))
    s = get_method(method)(a, tiny_batches(), ScoreConfig())
    cm = cost_model_for(a, 16)
    r = search(s.heads, s.neurons, cm, 0.5 * cm.total([4] * 3, [48] * 3))
    # unscaled scores made the search drop every head (the model collapsed to one class)
    assert 0 < r.head_mask.sum() < 12 and 0 < r.neuron_mask.sum() < 144
