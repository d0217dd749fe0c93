"""RustChat: a self-hosted team-chat server (aiohttp, PostgreSQL, Redis)."""

__version__ = "0.1.0"
