"""`optin gate` through the CLI: exit 0 on a met target, 1 on a missed one, 2 when it cannot judge;
gate.json and JUnit XML that CI systems read."""
import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

PROFILE = {"backend": "onnxruntime", "batch": 8, "seq": 64, "cv": 0.03, "providers": ["CPUExecutionProvider"],
           "latency_ms": {"median": 10.0, "p90": 11.0, "p99": 12.0}, "throughput": 800.0,
           "speedup": {"measured": 1.6, "mac_implied": 1.67, "flop_efficiency": 1.6 / 1.67}, "warnings": []}


def run_gate(*args):
    return subprocess.run([sys.executable, "-m", "optin.cli", "gate", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def profiled(tmp_path):
    (tmp_path / "profile.json").write_text(json.dumps(PROFILE))
    return tmp_path


def test_gate_pass_and_fail_exit_codes(profiled):
    ok = run_gate(str(profiled), "--min-speedup", "1.5", "--min-flop-efficiency", "0.9")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == ("optin gate: PASS: speedup over dense 1.60 >= 1.50, "
                                 "measured / MAC-implied speedup 0.96 >= 0.90")
    res = json.loads((profiled / "gate.json").read_text())
    assert res["passed"] and not res["reasons"]
    suite = ET.parse(profiled / "gate.xml").getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "0"

    junit = profiled / "ci" / "junit.xml"
    miss = run_gate(str(profiled), "--min-speedup", "1.7", "--junit", str(junit))
    assert miss.returncode == 1
    assert miss.stdout.strip() == "optin gate: FAIL: speedup over dense 1.60 < 1.70"
    res = json.loads((profiled / "gate.json").read_text())
    assert not res["passed"] and res["reasons"] == ["speedup over dense 1.600 < 1.700"]
    case = ET.parse(junit).getroot().find("testsuite/testcase")
    assert case.get("name") == "min_speedup" and case.find("failure").get("message") == res["reasons"][0]


def test_gate_errors_exit_2(profiled, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty")
    cases = {
        "missing profile": ([str(empty), "--min-speedup", "1.5"], "profile.json does not exist"),
        "no threshold": ([str(profiled)], "give a target"),
    }
    unmeasured = tmp_path_factory.mktemp("alone")
    (unmeasured / "profile.json").write_text(json.dumps({k: v for k, v in PROFILE.items() if k != "speedup"}))
    cases["no speedup"] = ([str(unmeasured), "--min-speedup", "1.5"], "without --against")
    for name, (args, msg) in cases.items():
        r = run_gate(*args)
        assert r.returncode == 2, (name, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("optin")]
        assert len(lines) == 1 and lines[0].startswith("optin gate: error:") and msg in lines[0], (name, r.stderr)
    assert not (empty / "gate.json").exists()


def test_gate_library_call(profiled):
    from profiling.gate import gate

    r = gate(str(profiled), min_flop_efficiency=1.0, log=lambda s: None)
    assert not r["passed"] and r["checks"][0]["name"] == "min_flop_efficiency"


@pytest.fixture(scope="module")
def int8_engine(tmp_path_factory):
    """A real dynamic-INT8 ONNX Runtime engine of a tiny pruned BERT, scored on its test split."""
    from test_quantize import _pruned

    from conftest import write_tiny_csv
    from export.engines import EngineConfig, build_engine

    root = tmp_path_factory.mktemp("gate_int8")
    folder, _ = _pruned(root, data=str(write_tiny_csv(root / "data.csv", n=400)))
    build_engine(str(folder), "onnxruntime", EngineConfig(threads=1, int8=True), log=lambda s: None)
    return folder


def test_accuracy_gate_fails_past_the_threshold(int8_engine):
    acc = json.loads((int8_engine / "engine.json").read_text())["accuracy"]
    drop = acc["drop_vs_dense_points"]
    assert drop == pytest.approx(100 * (acc["dense"] - acc["engine"]))
    ok = run_gate(str(int8_engine), "--max-accuracy-drop", f"{drop + 0.01:.4f}")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().startswith("optin gate: PASS: accuracy drop vs dense (points)")
    miss = run_gate(str(int8_engine), "--max-accuracy-drop", f"{drop - 0.01:.4f}")
    assert miss.returncode == 1, miss.stderr
    res = json.loads((int8_engine / "gate.json").read_text())
    assert not res["passed"] and res["reasons"] == [f"accuracy drop vs dense (points) {drop:.3f} > {drop - 0.01:.3f}"]
    assert res["engine"]["precision"] == "int8" and res["engine"]["n"] == acc["n"]
    case = ET.parse(int8_engine / "gate.xml").getroot().find("testsuite/testcase")
    assert case.get("name") == "max_accuracy_drop" and case.find("failure").get("message") == res["reasons"][0]


def test_accuracy_gate_needs_an_evaluated_engine(tmp_path):
    (tmp_path / "engine.json").write_text(json.dumps({"backend": "onnxruntime", "precision": "int8",
                                                      "accuracy": {"available": False, "reason": "no labelled test data"}}))
    r = run_gate(str(tmp_path), "--max-accuracy-drop", "1")
    assert r.returncode == 2 and "no task accuracy (no labelled test data)" in r.stderr
    r = run_gate(str(tmp_path / "nothing"), "--max-accuracy-drop", "1")
    assert r.returncode == 2 and "engine.json does not exist" in r.stderr
