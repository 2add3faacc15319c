"""--device / --dtype (optin.devices) on the CPU: `cpu` and `auto` (the CPU here) give the very
masks and weights of a run that never names a device, and of scores computed by a direct call
of the scorer; bad devices and unsafe dtypes are one line and exit 2; bfloat16 scoring really
runs narrower and still ranks the units alike; CUDA's out-of-memory becomes one line naming
--batch-size. The CUDA path itself: tests/gpu/test_device.py."""
import pytest
import torch

from conftest import tiny_batches, tiny_model, write_tiny_csv, write_tiny_folder
from optin import devices
from optin.adapters import adapter_for
from optin.errors import BadInput, DeviceOutOfMemory, OptinError
from optin.importance import get_method
from optin.prune import PruneConfig, _oom_fix, _score, prune_model

CFG = PruneConfig(calib=8, fvcore=False, max_length=10, batch_size=4)


def _quiet(*_):
    pass


def _prune(method, family="bert", config=CFG, **kw):
    return prune_model(tiny_model(family), tiny_batches(model_type=family), flops=0.5, method=method, config=config,
                       eval_data=tiny_batches(seed=1, model_type=family), log=_quiet, **kw)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("family,method,token_share", [("bert", "optin", 0), ("bert", "fisher", 0),
                                                        ("bert", "optin-est", 0), ("resnet", "optin", 0),
                                                        ("vit", "optin-fast", 0.3)])
def test_cpu_device_is_bit_for_bit(family, method, token_share):
    """BERT: scoring, re-fit, evaluation; ResNet: BatchNorm re-estimation; ViT: token scoring."""
    from dataclasses import replace

    cfg = replace(CFG, token_share=token_share)
    # the reference: unit scores from a plain call of the scorer, outside every device code path
    direct = get_method(method)(adapter_for(tiny_model(family)), tiny_batches(model_type=family), cfg.score)
    ref = _prune(method, family, cfg, scores=direct)
    assert (ref.spec.tokens is not None) == bool(token_share)
    for dev in (None, "cpu", "auto"):  # the scores themselves, through prune's device path (a mask can hide a change)
        c = replace(cfg, method=method, device=dev)
        model = tiny_model(family)
        on = devices.resolve(dev, model)
        s = _score(get_method(method), adapter_for(model.to(on)), devices.move(tiny_batches(model_type=family), on), c)
        if on.type == "cpu":
            assert torch.equal(s.heads, direct.heads) and torch.equal(s.neurons, direct.neurons), dev
    runs = {None: _prune(method, family, cfg), "cpu": _prune(method, family, cfg, device="cpu")}
    if not torch.cuda.is_available():  # auto is the CPU here
        runs["auto"] = _prune(method, family, cfg, device="auto")
    for dev, r in runs.items():
        assert r.spec == ref.spec, dev
        assert _same_weights(r.model, ref.model), dev
        assert r.report["accuracy"] == ref.report["accuracy"], dev
        assert r.report["device"]["type"] == "cpu" and r.report["device"]["requested"] == dev
        assert r.report["dtype"] == {"scoring_and_evaluation": "float32", "weights": "float32"}


def _spearman(x, y):
    rx, ry = (t.flatten().argsort().argsort().double() for t in (x, y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / (rx.norm() * ry.norm()))


@pytest.mark.parametrize("method", ["optin", "optin-fast"])
def test_bfloat16_scoring_ranks_like_float32(method):
    from dataclasses import replace

    adapter = adapter_for(tiny_model("bert"))
    cfg = replace(CFG, method=method)
    f32 = _score(get_method(method), adapter, tiny_batches(), cfg)
    b16 = _score(get_method(method), adapter, tiny_batches(), replace(cfg, dtype="bfloat16"))
    # it really ran in bfloat16 (else the comparison below proves nothing) ...
    assert not torch.equal(f32.heads, b16.heads) and not torch.equal(f32.neurons, b16.neurons)
    # ... and ranks the units as float32 does
    assert _spearman(f32.heads, b16.heads) > 0.95 and _spearman(f32.neurons, b16.neurons) > 0.95
    assert next(adapter.model.parameters()).dtype is torch.float32  # autocast leaves the weights alone


def test_bfloat16_run_reports_and_keeps_float32_weights():
    from dataclasses import replace

    r = prune_model(tiny_model("bert"), tiny_batches(), flops=0.5, method="optin", log=_quiet,
                    config=replace(CFG, dtype="bfloat16"), eval_data=tiny_batches(seed=1))
    assert r.report["dtype"] == {"scoring_and_evaluation": "bfloat16", "weights": "float32"}
    assert all(p.dtype is torch.float32 for p in r.model.parameters())
    assert 0 <= r.report["accuracy"]["pruned"] <= 1


def test_resolve_and_check_dtype():
    cpu = torch.device("cpu")
    assert devices.resolve("cpu") == cpu and devices.resolve(" CPU ") == cpu
    assert devices.resolve(None, tiny_model("bert")) == cpu
    assert devices.resolve("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else cpu)
    for bad in ("tpu", "cuda:x", "gpu0"):
        with pytest.raises(BadInput, match="unknown --device"):
            devices.resolve(bad)
    with pytest.raises(BadInput, match="float16 with --method fisher.*underflow"):
        devices.check_dtype(cpu, "float16", get_method("fisher").uses_gradients, "--method fisher")
    devices.check_dtype(cpu, "float16", get_method("optin").uses_gradients)  # no gradients: allowed
    with pytest.raises(BadInput, match="unknown --dtype"):
        devices.check_dtype(cpu, "float8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_without_gpu_names_device_cpu():
    with pytest.raises(BadInput, match="no CUDA device.*use --device cpu"):
        devices.resolve("cuda")


def _cli(capsys, *args):
    from optin.cli import main

    capsys.readouterr()  # what came before (a fixture's progress bars) is not this command's
    code = main(list(args))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    return code, err


def test_cli_bad_device_and_dtype_one_line_exit_2(tmp_path, capsys):
    model = str(write_tiny_folder(tmp_path / "model", "bert"))
    data = str(write_tiny_csv(tmp_path / "data.csv"))
    cases = [(["--device", "tpu"], "unknown --device 'tpu'"),
             (["--dtype", "float16", "--method", "fisher"], "use --dtype bfloat16")]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "use --device cpu"))
    for cmd in ("prune", "run"):
        for extra, msg in cases:
            out = tmp_path / f"out-{cmd}"
            code, err = _cli(capsys, cmd, model, "--data", data, "--out", str(out), "--no-fvcore", "--calib", "8",
                             *extra)
            assert code == 2 and len(err) == 1 and msg in err[0], (cmd, extra, err)
            assert not out.exists()


def test_profile_flags_one_line_exit_2(tmp_path, capsys):
    folder = str(write_tiny_folder(tmp_path / "model", "bert"))
    cases = [(["--backend", "onnxruntime", "--device", "cpu"], "apply to --backend torch"),
             (["--backend", "torch", "--fp16"], "add --device cuda"),
             (["--backend", "torch", "--device", "cpu", "--cuda-graphs"], "add --device cuda")]
    if not torch.cuda.is_available():
        cases.append((["--backend", "torch", "--device", "cuda"], "use --device cpu"))
    for extra, msg in cases:
        code, err = _cli(capsys, "profile", folder, *extra)
        assert code == 2 and len(err) == 1 and msg in err[0], (extra, err)
    assert not (tmp_path / "model" / "profile.json").exists()


def test_profile_torch_on_named_cpu(tmp_path):
    from export.engines import EngineConfig
    from profiling.latency import ProfileConfig, profile

    folder = str(write_tiny_folder(tmp_path / "model", "bert"))
    rep = profile(folder, ProfileConfig(backend="torch", device="cpu", batch=2, seq=8, iters=10, warmup=1,
                                        engine=EngineConfig(threads=1)), log=_quiet)
    assert rep["providers"] == ["torch-cpu"] and rep["precision"] == "fp32" and rep["latency_ms"]["median"] > 0
    s = rep["session"]
    assert s["device"]["type"] == "cpu" and s["timer"] == "perf_counter" and not s["cuda_graphs"]


def _runs_out(batch_size):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory_is_one_line_naming_batch_size():
    wrapped = devices.out_of_memory(_oom_fix)(_runs_out)
    with pytest.raises(DeviceOutOfMemory) as e:
        wrapped(CFG)
    msg = str(e.value)
    assert isinstance(e.value, OptinError)  # optin.cli: one line, exit 2
    assert "\n" not in msg and msg.startswith("CUDA out of memory")
    assert f"--batch-size (now {CFG.batch_size})" in msg and "--device cpu" in msg
    # the out-of-memory error (and what its frames hold on the GPU) is not kept as the context
    assert e.value.__context__ is None and e.value.__cause__ is None
    # other errors pass through unchanged
    with pytest.raises(ZeroDivisionError):
        devices.out_of_memory(_oom_fix)(lambda: 1 / 0)()
