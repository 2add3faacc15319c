"""Token reduction on tiny ViT / DeiT: the narrowed model drops tokens for real (fewer MACs by
fvcore, ONNX parity), equals a hand-written reference, and the scores and schedule keep their
promises (nested sets, never growing with depth, special tokens kept, MACs under target)."""
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import missing, tiny_batches, tiny_model
from optin.adapters import adapter_for
from optin.importance import ScoreConfig
from optin.masking import mask_hooks
from optin.narrow import narrow
from optin.prune import cost_model_for, fvcore_count
from optin.spec import PruneSpec
from optin.tokens import schedule, token_scores
from profiling.macs import MATMUL_OPS

HEADS = ((0, 2), (1, 2, 3), (0, 1, 2, 3))
NEURONS = (tuple(range(0, 48, 2)), tuple(range(10)), ())


def _tokens(model_type):
    s = 2 if model_type == "deit" else 1  # [CLS] (+ distillation token) are always kept
    n = 9 + s
    return (tuple(range(n)), tuple(range(s)) + (s, s + 2, s + 3, s + 5, s + 8), tuple(range(s)) + (s + 3, s + 8))


def _reference(model, spec, batch):
    """Masked dense model, tokens gathered by hand in front of each block."""
    a = adapter_for(model)
    hm, nm = spec.masks()
    with mask_hooks(a) as state:
        state.set(hm, nm)
        h, ctx = a.embed(batch)
        prev = list(range(h.shape[1]))
        for i, keep in enumerate(spec.tokens):
            h = h[:, [prev.index(p) for p in keep]]
            prev = list(keep)
            h = a.run_layer(i, h, ctx)
        return a.head(h, ctx)


@pytest.mark.parametrize("model_type", ["vit", "deit", pytest.param("timm_vit", marks=pytest.mark.skipif(
    bool(missing("timm_vit")), reason="needs timm: make test-timm runs it"))])
def test_token_narrowing_is_real_and_exact(model_type, tmp_path):
    from export.onnx import export_onnx
    from optin.io import load_pruned, save_pruned

    dense = tiny_model(model_type)
    n = adapter_for(dense).seq_len(None)
    spec = PruneSpec(model_type, 4, 48, HEADS, NEURONS, _tokens(model_type))
    batch = tiny_batches(model_type=model_type)[0]
    with torch.no_grad():
        ref = _reference(dense, spec, batch)
        model = tiny_model(model_type)
        narrow(adapter_for(model), spec)
        out = model(pixel_values=batch["pixel_values"]).logits
    assert (out - ref).abs().max() <= 1e-5
    # the shorter sequence is real compute: fvcore sees it, and it matches the analytic count
    cm = cost_model_for(adapter_for(dense), n, spec.kept_tokens(n))
    analytic = cm.total(spec.kept_heads, spec.kept_neurons)
    counted = fvcore_count(model, n, MATMUL_OPS)
    assert abs(counted - analytic) / analytic < 0.02
    no_tokens = cost_model_for(adapter_for(dense), n).total(spec.kept_heads, spec.kept_neurons)
    assert counted < 0.8 * no_tokens
    # reload and ONNX
    save_pruned(model, None, spec, str(tmp_path), extra={"seq_len": n, "max_length": n, "data": None})
    with torch.no_grad():
        assert (load_pruned(str(tmp_path))(pixel_values=batch["pixel_values"]).logits - out).abs().max() <= 1e-6
    assert json.loads((tmp_path / "spec.json").read_text())["tokens"][2] == list(spec.tokens[2])
    rep = export_onnx(str(tmp_path), log=lambda s: None)
    assert rep["parity"]["max_abs_diff"] <= 1e-5


def test_token_scores_are_the_measured_trajectory():
    """The raw KD and Gram terms of a candidate equal those of a model with that token dropped,
    whatever the number of candidates sharing a pass."""
    model = tiny_model("vit")
    a = adapter_for(model)
    batches = tiny_batches(model_type="vit")
    scores, raw = token_scores(a, batches, ScoreConfig(candidates_per_pass=3))
    scores1, _ = token_scores(a, batches, ScoreConfig(candidates_per_pass=1))
    assert torch.allclose(scores, scores1, rtol=1e-4) and torch.isinf(scores[:, 0]).all()
    assert scores.shape == (3, 10) and (scores[:, 1:] >= 0).all()
    c = next(j for j, (i, _, p) in enumerate(raw["cands"]) if i == 1 and p == [4])
    keep = [q for q in range(10) if q != 4]
    spec = PruneSpec("vit", 4, 48, ((0, 1, 2, 3),) * 3, (tuple(range(48)),) * 3,
                     (tuple(range(10)), tuple(keep), tuple(keep)))
    kd = md1 = 0.0
    with torch.no_grad():
        for b in batches:
            h, ctx = a.embed(b)
            hs = []
            for i in range(3):
                h = a.run_layer(i, h, ctx)
                hs.append(h)
            p = F.log_softmax(a.head(h, ctx), -1)
            dropped = a.embed(b)[0]
            dropped = a.run_layer(0, dropped, ctx)[:, keep]
            dropped = a.run_layer(1, dropped, ctx)
            f, fd = F.normalize(dropped, dim=-1), F.normalize(hs[1][:, keep], dim=-1)
            md1 += float((f @ f.transpose(1, 2) - fd @ fd.transpose(1, 2)).pow(2).mean()) / len(batches)
            q = F.log_softmax(_reference(model, spec, b), -1)
            kd += float(F.kl_div(q, p, log_target=True, reduction="batchmean")) / len(batches)
    assert raw["kd"][c] == pytest.approx(kd, rel=1e-4, abs=1e-9)
    assert raw["md"][c, 1] == pytest.approx(md1, rel=1e-4, abs=1e-9)
    assert raw["md"][c, 0] == 0  # a token dropped before block 1 cannot change block 0


def test_schedule_is_nested_monotone_and_meets_target():
    a = adapter_for(tiny_model("deit"))
    d, n = a.dims(), a.seq_len(None)

    def macs(counts):
        return cost_model_for(a, n, counts).total([d.num_heads] * 3, [d.ffn_size] * 3)

    g = torch.Generator().manual_seed(0)
    scores = torch.rand(3, n, generator=g)
    scores[:, 5] = 100.0  # a position that matters a lot: kept to the end whenever anything is
    for frac in (1.0, 0.9, 0.7, 0.5):
        kept = schedule(scores, 2, macs, frac * macs([n] * 3))
        counts = [len(k) for k in kept]
        assert macs(counts) <= frac * macs([n] * 3) * (1 + 1e-9)
        assert counts == sorted(counts, reverse=True)
        assert all(set(kept[i + 1]) <= set(kept[i]) and {0, 1} <= set(kept[i + 1]) for i in range(2))
        assert frac < 1 or counts == [n] * 3
        if counts[-1] > 2:
            assert 5 in kept[-1]
    with pytest.raises(Exception, match="special tokens"):
        schedule(scores, 2, macs, 0.01 * macs([n] * 3))


def test_old_spec_without_tokens_loads():
    d = json.loads(PruneSpec("vit", 4, 48, HEADS, NEURONS).to_json())
    d.pop("tokens")
    assert PruneSpec.from_json(json.dumps(d)).tokens is None


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "optin.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_prune_with_tokens_cli(tiny_folders, tmp_path):
    from test_vision import _image_folder

    data = _image_folder(tmp_path / "images")
    out = tmp_path / "p"
    r = _cli("prune", str(tiny_folders["vit"]), "--data", f"imagefolder:{data}", "--flops", "0.5",
             "--token-share", "0.5", "--method", "fisher", "--calib", "8", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    counts = rep["kept"]["tokens"]
    assert counts == sorted(counts, reverse=True) and counts[-1] < 10 and min(counts) >= 1
    assert rep["tokens"]["share"] == 0.5 and rep["tokens"]["mac_ratio_tokens_only"] <= 1 - 0.5 * 0.5 + 1e-9
    assert rep["macs"]["ratio"] <= 0.5 + 1e-9
    # fvcore counts the narrowed model with its shorter sequences (totals include LayerNorm etc.)
    m = rep["macs"]
    assert abs(m["fvcore_pruned"] / m["fvcore_dense"] - m["ratio"]) < 0.05


def test_token_share_errors_are_one_line(tiny_folders, tiny_csv, tmp_path):
    for args, msg in ((["--token-share", "0.5"], "applies to ViT/DeiT"), (["--token-share", "1.5"], "--token-share must be")):
        r = _cli("prune", str(tiny_folders["bert"]), "--data", str(tiny_csv), "--out", str(tmp_path / "x"),
                 "--no-fvcore", "--method", "magnitude", *args, timeout=300)
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("optin")]
        assert r.returncode == 2 and len(lines) == 1 and msg in lines[0], r.stderr
        assert not (tmp_path / "x").exists()
