"""tests/terraform: Terraform configurations, and a rollout through them onto real test hosts."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # The same marker as tests/deploy (registered here too for runs of tests/terraform alone).
    config.addinivalue_line("markers", "deploy: creates real test hosts (root, minutes); leave out with -m 'not deploy'")
