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
