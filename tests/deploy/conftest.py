"""tests/deploy: the playbook against real hosts (systemd containers on this machine)."""

from __future__ import annotations

from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "deploy: builds real test hosts and runs ansible/site.yml against them (root, ~10-15 min); "
        "select with -m deploy, leave out with -m 'not deploy'",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:  # noqa: ARG001
    """Keep each test's call report on the item, so module fixtures can tell that a step failed."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
