"""The shipped Prometheus alert rules are valid and fire when they should (promtool)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rustchat-alerts.yml"
UNIT_TESTS = ROOT / "tests" / "prometheus" / "rustchat-alerts.test.yml"


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.skip("promtool not found; install it with scripts/bootstrap.sh --test "
                    "(Debian: apt-get install --no-install-recommends prometheus)")
    return found


def run(*args: str, cwd: Path = ROOT) -> str:
    proc = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_promtool_check_rules() -> None:
    out = run("check", "rules", str(RULES))
    assert "SUCCESS: 4 rules found" in out


def test_promtool_unit_tests_of_the_alerts() -> None:
    # rule_files in the test file are relative to its own directory.
    out = run("test", "rules", UNIT_TESTS.name, cwd=UNIT_TESTS.parent)
    assert "SUCCESS" in out


def test_the_rules_watch_metrics_the_server_exports() -> None:
    from rustchat import metrics

    exported = {m._name for m in vars(metrics).values() if hasattr(m, "_name")}
    text = RULES.read_text()
    for name in ("rustchat_db_pool_saturation", "rustchat_ws_connections",
                 "rustchat_cluster_pubsub_lag_seconds", "rustchat_http_request_duration_seconds"):
        assert name in exported, name
        assert name in text, name
