"""tests/vagrant: the Vagrantfile as Vagrant reads it, and a real cluster on libvirt VMs."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "vagrant: brings up libvirt VMs through the Vagrantfile and runs site.yml (root, RUSTCHAT_TEST_VAGRANT=1)",
    )
