"""Setup shared by the tests that build real test hosts (tests/deploy, tests/terraform)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.deploy import hosts


def clean_cluster(log_dir: Path) -> hosts.Cluster:
    """A Cluster with no hosts up, logging into a fresh `log_dir`; skips where hosts cannot be built.

    Hosts a killed test run left behind are removed; a cluster made by `make cluster` is not
    touched (the test fails and says how to remove it)."""
    reason = hosts.unavailable_reason()
    if reason:
        pytest.skip(f"this machine cannot run the test hosts: {reason}")
    cluster = hosts.Cluster()
    if cluster.state.hosts:
        if cluster.state["owner"] != "pytest":
            pytest.fail(f"a cluster made by `make cluster` is up ({', '.join(cluster.state.hosts)}); "
                        f"remove it first with `make cluster-down`", pytrace=False)
        hosts.log("removing the test hosts a killed test run left behind")
        cluster.down()
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    os.environ["RUSTCHAT_TEST_HOSTS_LOG_DIR"] = str(log_dir)
    return cluster
