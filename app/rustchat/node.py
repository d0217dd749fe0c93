"""This process's identity in the cluster."""

import os
import secrets
import socket


def new_node_id() -> str:
    """Host name, pid and a random part: unique per gunicorn worker, and per restart of one."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
