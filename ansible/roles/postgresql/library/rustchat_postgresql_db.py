#!/usr/bin/python3
"""Ansible module: the app's PostgreSQL role (LOGIN, scram-sha-256 password) and database.

Runs psql as the `postgres` OS user over the local socket (peer authentication). The password
never reaches PostgreSQL or a command line in clear: the module computes the SCRAM-SHA-256
verifier itself and compares it with the stored one, so an unchanged password reports no change
and a changed one is replaced. Supports check mode.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: rustchat_postgresql_db
short_description: Ensure a LOGIN role with a scram-sha-256 password and a database it owns
options:
  name: {description: database name, required: true, type: str}
  owner: {description: role name, required: true, type: str}
  password: {description: the role's password, required: true, type: str, no_log: true}
  port: {description: PostgreSQL port (local socket), type: int, default: 5432}
"""

ITERATIONS = 4096  # PostgreSQL's default scram_iterations


def _salted(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt if salt is not None else os.urandom(16)
    salted = _salted(password, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def scram_matches(stored: str | None, password: str) -> bool:
    """Whether `stored` (pg_authid.rolpassword) is a SCRAM verifier of `password`."""
    if not stored or not stored.startswith("SCRAM-SHA-256$"):
        return False
    try:
        head, keys = stored[len("SCRAM-SHA-256$"):].split("$", 1)
        iterations, salt = head.split(":", 1)
        return hmac.compare_digest(scram_verifier(password, base64.b64decode(salt), int(iterations)), stored)
    except (ValueError, TypeError):
        return False


def psql(module: AnsibleModule, sql: str, variables: dict[str, str]) -> str:
    """Run SQL from stdin as `postgres`; names go in psql variables, which psql quotes itself.

    The only value written into SQL text is a SCRAM verifier (base64 and 'SCRAM-SHA-256$', no
    quotes), never on a command line.
    """
    argv = ["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-v", "ON_ERROR_STOP=1",
            "-p", str(module.params["port"]), "-d", "postgres"]
    for key, value in variables.items():
        argv += ["-v", f"{key}={value}"]
    proc = subprocess.run(argv, input=sql, capture_output=True, text=True)
    if proc.returncode != 0:
        module.fail_json(msg=f"psql failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "owner": {"type": "str", "required": True},
            "password": {"type": "str", "required": True, "no_log": True},
            "port": {"type": "int", "default": 5432},
        },
        supports_check_mode=True,
    )
    name, owner, password = module.params["name"], module.params["owner"], module.params["password"]
    changes: list[str] = []
    # pg_authid is readable by superusers only; psql's -A -t prints '' for a NULL password.
    row = psql(module, "SELECT 'exists:' || coalesce(rolpassword, '') FROM pg_authid WHERE rolname = :'role'",
               {"role": owner})
    if not row:
        changes.append(f"create role {owner}")
        if not module.check_mode:
            psql(module, f"CREATE ROLE :\"role\" LOGIN PASSWORD '{scram_verifier(password)}'", {"role": owner})
    elif not scram_matches(row[len("exists:"):], password):
        changes.append(f"set the password of role {owner}")
        if not module.check_mode:
            psql(module, f"ALTER ROLE :\"role\" LOGIN PASSWORD '{scram_verifier(password)}'", {"role": owner})
    db_owner = psql(module, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :'db'", {"db": name})
    if not db_owner:
        changes.append(f"create database {name} owned by {owner}")
        if not module.check_mode:
            psql(module, "CREATE DATABASE :\"db\" OWNER :\"role\"", {"db": name, "role": owner})
    elif db_owner != owner:
        changes.append(f"make {owner} the owner of database {name} (was {db_owner})")
        if not module.check_mode:
            psql(module, "ALTER DATABASE :\"db\" OWNER TO :\"role\"", {"db": name, "role": owner})
    module.exit_json(changed=bool(changes), changes=changes)


if __name__ == "__main__":
    main()
