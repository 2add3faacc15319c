"""The analytic MAC count against fvcore (MACs, eager attention), dense and pruned. Tiny models
are LayerNorm-heavy, so only the matmul operators are compared here; the zoo test compares totals."""
import pytest

from conftest import awkward_spec, tiny_model
from optin.adapters import adapter_for
from optin.narrow import narrow
from optin.prune import cost_model_for, fvcore_count
from profiling.macs import MATMUL_OPS


@pytest.mark.parametrize("seq", [8, 32])
def test_analytic_matches_fvcore(family, seq):
    model = tiny_model(family)
    adapter = adapter_for(model)
    cm = cost_model_for(adapter, seq)
    d = adapter.dims()
    dense = cm.total(d.layer_heads, d.layer_ffn)
    assert abs(fvcore_count(model, seq, MATMUL_OPS) - dense) / dense < 0.02
    spec = awkward_spec(family)
    narrow(adapter, spec)
    pruned = cm.total(spec.kept_heads, spec.kept_neurons)
    assert pruned < dense
    assert abs(fvcore_count(model, seq, MATMUL_OPS) - pruned) / pruned < 0.02


def test_mac_formula_by_hand():
    from profiling.macs import mac_cost_model

    # BERT-base layer at n=128: 12 heads·(4·128·768·64 + 2·128²·64) + 3072·2·128·768
    cm = mac_cost_model(1, 768, 64, 128, fixed=0)
    assert cm.total([12], [3072]) == 12 * (4 * 128 * 768 * 64 + 2 * 128 * 128 * 64) + 3072 * 2 * 128 * 768
