"""The CUDA path of --device / --dtype and of `optin profile --backend torch --device cuda`, on
tiny models: scores and masks agree with the CPU's within tolerance, the run reports the GPU it
used, the saved weights are float32, a real out-of-memory is one line naming --batch-size, and
the CUDA-event / CUDA-graph profile writes its profile.json. Skipped where torch sees no GPU
(the CPU-checkable parts: tests/unit/test_device.py)."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import tiny_batches, tiny_model, write_tiny_csv, write_tiny_folder

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason=f"no CUDA GPU visible to torch {torch.__version__} "
                                       f"(CUDA build: {torch.version.cuda or 'none'})")


def _quiet(*_):
    pass


def _cfg(**kw):
    from optin.prune import PruneConfig

    return PruneConfig(calib=8, fvcore=False, max_length=10, batch_size=4, **kw)


@pytest.mark.parametrize("method", ["optin", "optin-est", "fisher"])
def test_cuda_scores_match_cpu(method):
    from optin.adapters import adapter_for
    from optin.importance import get_method

    cpu = get_method(method)(adapter_for(tiny_model("bert")), tiny_batches(), _cfg().score)
    model = tiny_model("bert").cuda()
    batches = [{k: v.cuda() for k, v in b.items()} for b in tiny_batches()]
    gpu = get_method(method)(adapter_for(model), batches, _cfg().score)
    assert gpu.heads.device.type == "cpu"  # scores come back to the host for the search
    for a, b in ((cpu.heads, gpu.heads), (cpu.neurons, gpu.neurons)):
        # float32 on both; reductions run in another order (small scores are differences of Grams)
        assert torch.allclose(a, b, rtol=1e-2, atol=1e-4 * float(a.abs().max())), (a - b).abs().max()


def test_prune_on_cuda_agrees_with_cpu_and_saves_float32(tmp_path):
    import optin
    from safetensors.torch import load_file

    on_cpu = optin.prune_model(tiny_model("bert"), tiny_batches(), flops=0.5, method="optin", config=_cfg(),
                               device="cpu", eval_data=tiny_batches(seed=1), log=_quiet)
    res = optin.prune_model(tiny_model("bert"), tiny_batches(), flops=0.5, method="optin", config=_cfg(),
                            device="cuda", eval_data=tiny_batches(seed=1), log=_quiet)
    rep = res.report
    assert rep["device"]["type"] == "cuda" and rep["device"]["name"] == torch.cuda.get_device_name(0)
    assert next(res.model.parameters()).is_cuda  # left where it ran
    kept = lambda spec: sum(map(len, spec.kept_heads)) + sum(map(len, spec.kept_neurons))  # noqa: E731
    assert kept(res.spec) == pytest.approx(kept(on_cpu.spec), rel=0.1)  # near-ties may flip, not the budget
    same = sum(len(set(a) & set(b)) for a, b in zip(res.spec.kept_neurons, on_cpu.spec.kept_neurons))
    assert same >= 0.9 * sum(map(len, on_cpu.spec.kept_neurons))
    res.save(str(tmp_path / "out"))
    weights = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert all(t.dtype is torch.float32 and t.device.type == "cpu" for t in weights.values())


def test_bfloat16_on_cuda_ranks_like_float32():
    from dataclasses import replace

    from optin.adapters import adapter_for
    from optin.importance import get_method
    from optin.prune import _score

    adapter = adapter_for(tiny_model("bert").cuda())
    batches = [{k: v.cuda() for k, v in b.items()} for b in tiny_batches()]
    f32 = _score(get_method("optin"), adapter, batches, _cfg(method="optin"))
    b16 = _score(get_method("optin"), adapter, batches, replace(_cfg(method="optin"), dtype="bfloat16"))

    def spearman(x, y):
        rx, ry = (t.flatten().argsort().argsort().double() for t in (x, y))
        rx, ry = rx - rx.mean(), ry - ry.mean()
        return float((rx * ry).sum() / (rx.norm() * ry.norm()))

    assert not torch.equal(f32.neurons, b16.neurons)
    assert spearman(f32.heads, b16.heads) > 0.95 and spearman(f32.neurons, b16.neurons) > 0.95


def test_real_out_of_memory_is_one_line():
    from optin import devices
    from optin.errors import DeviceOutOfMemory
    from optin.prune import _oom_fix

    def too_big(cfg):
        return torch.empty(1 << 50, dtype=torch.uint8, device="cuda")  # a petabyte

    with pytest.raises(DeviceOutOfMemory, match=r"CUDA out of memory on cuda:0 .*--batch-size \(now 4\)") as e:
        devices.out_of_memory(_oom_fix)(too_big)(_cfg())
    assert "\n" not in str(e.value)


def test_profile_torch_cuda_graphs(tmp_path):
    dense = write_tiny_folder(tmp_path / "dense", "bert")
    csv = write_tiny_csv(tmp_path / "data.csv")
    pruned = tmp_path / "pruned"
    r = subprocess.run([sys.executable, "-m", "optin.cli", "prune", str(dense), "--data", str(csv), "--out", str(pruned),
                        "--flops", "0.5", "--method", "optin", "--calib", "16", "--max-length", "16", "--no-fvcore",
                        "--device", "cuda"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((pruned / "report.json").read_text())
    assert rep["device"]["type"] == "cuda"
    for extra in ([], ["--fp16", "--cuda-graphs"]):
        r = subprocess.run([sys.executable, "-m", "optin.cli", "profile", str(pruned), "--against", str(dense),
                            "--backend", "torch", "--device", "cuda", "--batch", "4", "--seq", "16", "--iters", "20",
                            "--warmup", "3", "--sweep-batch", "1", *extra], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        prof = json.loads((pruned / "profile.json").read_text())
        s = prof["session"]
        assert prof["providers"] == ["torch-cuda"] and s["timer"] == "cuda events" and s["device"]["type"] == "cuda"
        assert s["cuda_graphs"] == bool(extra) and prof["precision"] == ("fp16" if extra else "fp32")
        assert prof["dense"]["precision"] == prof["precision"] and prof["speedup"]["measured"] > 0
        assert prof["latency_ms"]["median"] > 0 and [p["batch"] for p in prof["sweep"]] == [1]
