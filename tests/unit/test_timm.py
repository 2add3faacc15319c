"""timm VisionTransformer through optin.models.timm_vit: the split qkv is the same function as timm's
fused one, timm state dicts and checkpoint files load, DeiT's distilled model and 'avg' pooling and
LayerScale narrow exactly, token reduction on 'token' pooling, and `optin prune` end to end on a
`timm:NAME:CHECKPOINT` model. The family-parametrised tests (tests/unit/test_adapters.py, test_macs,
test_export, ...) run the tiny `timm_vit` too."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import randomise_timm, tiny_batches, tiny_timm_vit, TINY
from optin.adapters import adapter_for
from optin.masking import mask_hooks
from optin.narrow import narrow
from optin.prune import cost_model_for, fvcore_count
from optin.spec import PruneSpec
from profiling.macs import MATMUL_OPS

timm = pytest.importorskip("timm", reason="needs timm and a matching torchvision: make test-timm runs it")

HEADS = ((0, 2), (), (1, 2, 3))
NEURONS = (tuple(range(0, 48, 2)), tuple(range(10)), ())
TINY_KW = dict(img_size=12, patch_size=4, in_chans=1, embed_dim=32, depth=3, num_heads=4, mlp_ratio=1.5, num_classes=3)


def _timm_net(name="vit_tiny_patch16_224", seed=0, **kw):
    torch.manual_seed(seed)
    return randomise_timm(timm.create_model(name, pretrained=False, **{**TINY_KW, **kw})).eval()


@pytest.mark.parametrize("name,kw", [("vit_tiny_patch16_224", {}),
                                     ("deit_tiny_distilled_patch16_224", {}),
                                     ("vit_tiny_patch16_224", dict(global_pool="avg", class_token=False,
                                                                   init_values=0.5, reg_tokens=2))])
def test_split_qkv_gives_timm_logits(name, kw):
    from optin.models.timm_vit import TimmVitForImageClassification, convert_timm_state_dict

    net = _timm_net(name, **kw)
    model = TimmVitForImageClassification.from_timm(net, name)
    x = torch.randn(4, 1, 12, 12)
    with torch.no_grad():
        ref = net(x)
        assert (model(pixel_values=x).logits - ref).abs().max() <= 1e-6
        # block-wise (the adapter's embed / run_layer / head) is the same function
        assert (adapter_for(model).forward({"pixel_values": x}) - ref).abs().max() <= 1e-6
    sd = convert_timm_state_dict(net.state_dict())
    assert "vit.blocks.0.attn.qkv.q.weight" in sd and not any(k.endswith("attn.qkv.weight") for k in sd)


@pytest.mark.parametrize("name,kw,special,tokens_ok", [
    ("deit_tiny_distilled_patch16_224", {}, 2, True),
    ("vit_tiny_patch16_224", dict(global_pool="avg", init_values=0.5), 1, False),
    ("vit_tiny_patch16_224", dict(reg_tokens=2), 3, True)])
def test_variants_narrow_exactly(name, kw, special, tokens_ok, tmp_path):
    """Narrowed == masked with an emptied attention and an emptied FFN (LayerScale kept), reload, ONNX."""
    from export.onnx import export_onnx
    from optin.io import load_pruned, save_pruned

    model = tiny_timm_vit(TINY, timm_model=name, **kw)
    a = adapter_for(model)
    assert a.special_tokens == special and a.token_reduction == tokens_ok and a.seq_len(None) == 9 + special
    cm = cost_model_for(a, a.seq_len())
    dense = cm.total([4] * 3, [48] * 3)
    assert abs(fvcore_count(model, a.seq_len(), MATMUL_OPS) - dense) / dense < 0.02  # two heads when distilled
    spec = PruneSpec("timm_vit", 4, 48, HEADS, NEURONS)
    x = tiny_batches(model_type="timm_vit")[0]["pixel_values"]
    with torch.no_grad(), mask_hooks(a) as state:
        state.set(*spec.masks())
        masked = model(pixel_values=x).logits
    narrow(a, spec)
    with torch.no_grad():
        out = model(pixel_values=x).logits
    assert (out - masked).abs().max() <= 1e-5
    save_pruned(model, None, spec, str(tmp_path), extra={"seq_len": a.seq_len(), "max_length": a.seq_len(), "data": None})
    with torch.no_grad():
        assert (load_pruned(str(tmp_path))(pixel_values=x).logits - out).abs().max() <= 1e-6
    assert export_onnx(str(tmp_path), log=lambda s: None)["parity"]["max_abs_diff"] <= 1e-5


def test_unsupported_timm_models_fail_clearly():
    from optin.errors import UnsupportedModel
    from optin.models.timm_vit import check_supported

    with pytest.raises(UnsupportedModel, match="attention pooling"):
        check_supported(timm.create_model("vit_tiny_patch16_224", pretrained=False, global_pool="map", **{
            k: v for k, v in TINY_KW.items()}))


def test_timm_checkpoint_resolves_to_a_folder(tmp_path, monkeypatch):
    """timm:NAME:CHECKPOINT builds a cached folder (the named architecture, here timm's ViT-Tiny at
    224×224, random weights saved as .safetensors) that loads as the same model; the checkpoint's
    head sets the class count."""
    from optin.io import load_model
    from optin.zoo import resolve_model

    monkeypatch.setenv("OPTIN_CACHE", str(tmp_path / "cache"))
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5).eval()
    path = tmp_path / "ckpt.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    folder = resolve_model(f"timm:vit_tiny_patch16_224:{path}", log=lambda s: None)
    assert resolve_model(f"timm:vit_tiny_patch16_224:{path}", log=lambda s: None) == folder  # cached
    model, proc = load_model(folder)
    assert model.config.num_labels == 5 and model.config.image_size == 224 and proc.channels == 3
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (model(pixel_values=x).logits - net(x)).abs().max() <= 1e-5


def test_timm_spec_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTIN_CACHE", str(tmp_path / "cache"))
    (tmp_path / "empty.pth").write_bytes(b"")
    for spec, msg in (("timm:vit_tiny_patch16_224:/nonexistent.pth", "does not exist"),
                      (f"timm:no_such_model_xyz:{tmp_path / 'empty.pth'}", "timm has no model")):
        r = subprocess.run([sys.executable, "-m", "optin.cli", "prune", spec, "--data", "fashion-mnist",
                            "--out", str(tmp_path / "x"), "--no-fvcore"], capture_output=True, text=True, timeout=300)
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("optin")]
        assert r.returncode == 2 and len(lines) == 1 and msg in lines[0], r.stderr


def test_prune_timm_folder_end_to_end(tmp_path):
    """`optin prune` on a tiny timm ViT folder with an image folder, token reduction included."""
    from optin.images import ImageProcessor
    from test_vision import _image_folder

    folder = tmp_path / "tiny-timm"
    model = tiny_timm_vit(TINY)
    model.save_pretrained(folder)
    ImageProcessor(12, 1).save_pretrained(str(folder))
    data = _image_folder(tmp_path / "images")
    out = tmp_path / "p"
    r = subprocess.run([sys.executable, "-m", "optin.cli", "prune", str(folder), "--data", f"imagefolder:{data}",
                        "--flops", "0.5", "--token-share", "0.5", "--calib", "8", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["macs"]["ratio"] <= 0.5 + 1e-9 and rep["macs"]["seq_len"] == 10
    counts = rep["kept"]["tokens"]
    assert counts == sorted(counts, reverse=True) and counts[-1] < 10
    from optin.io import load_pruned

    pruned = load_pruned(str(out))
    with torch.no_grad():
        assert pruned(pixel_values=torch.randn(2, 1, 12, 12)).logits.shape == (2, 3)
