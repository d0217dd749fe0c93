"""terraform/aws read as HCL (python-hcl2): where `terraform validate` cannot run for lack of the
AWS provider, the security groups are still checked against what the playbook's firewall opens.

Each service port admits exactly the role in front of it, SSH only the admin networks, HTTP(S) only
on the load balancers; the ports are the roles' own defaults; every instance is in its role's group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hcl2
import yaml

from tests.terraform import tf

ROLES = tf.REPO / "ansible" / "roles"


def _load(name: str) -> dict[str, Any]:
    with open(tf.AWS / name) as fh:
        return hcl2.load(fh)


def _resources(doc: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """{resource name: body} of one resource type (python-hcl2 keeps the labels quoted)."""
    out = {}
    for block in doc.get("resource", []):
        for rtype, named in block.items():
            if rtype.strip('"') == kind:
                out.update({name.strip('"'): body for name, body in named.items()})
    return out


def _unquote(value: Any) -> Any:
    return value.strip('"') if isinstance(value, str) else value


def _default(role: str, var: str) -> Any:
    return yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())[var]


def test_ports_are_the_playbooks_own() -> None:
    local = _load("security.tf")["locals"][0]
    assert local["ports"] == {
        "http": _default("nginx", "nginx_http_port"), "https": _default("nginx", "nginx_https_port"),
        "app": _default("rustchat", "rustchat_port"), "postgres": _default("postgresql", "postgresql_port"),
        "redis": _default("redis", "redis_port"), "ssh": _default("common", "common_firewall_ssh_port"),
    }


def test_each_service_admits_only_the_role_in_front_of_it() -> None:
    doc = _load("security.tf")
    local = doc["locals"][0]
    rules = {role: (r["port"], _unquote(r["from"])) for role, r in local["service_rules"].items()}
    assert rules == {"app": ("${local.ports.app}", "lb"), "postgres": ("${local.ports.postgres}", "app"),
                     "redis": ("${local.ports.redis}", "app")}
    ingress = _resources(doc, "aws_vpc_security_group_ingress_rule")
    assert set(ingress) == {"ssh", "lb_public", "service"}
    service = ingress["service"]
    assert service["for_each"] == "${local.service_rules}"
    assert service["security_group_id"] == "${aws_security_group.role[each.key].id}"
    assert service["referenced_security_group_id"] == "${aws_security_group.role[each.value.from].id}"
    assert "cidr_ipv4" not in service and service["from_port"] == service["to_port"] == "${each.value.port}"


def test_networks_are_admitted_only_to_ssh_and_the_load_balancers() -> None:
    doc = _load("security.tf")
    local = doc["locals"][0]
    ingress = _resources(doc, "aws_vpc_security_group_ingress_rule")
    assert "var.admin_cidrs" in local["ssh_rules"] and "local.roles" in local["ssh_rules"]
    assert ingress["ssh"]["from_port"] == ingress["ssh"]["to_port"] == "${local.ports.ssh}"
    assert ingress["ssh"]["cidr_ipv4"] == "${each.value.cidr}"
    assert "var.public_cidrs" in local["public_rules"] and '["http", "https"]' in local["public_rules"]
    assert ingress["lb_public"]["security_group_id"] == '${aws_security_group.role["lb"].id}'
    text = "\n".join(p.read_text() for p in tf.AWS.glob("*.tf"))
    # The only literal "anywhere" is outbound (packages) and the default route.
    assert text.count('"0.0.0.0/0"') == 4, "0.0.0.0/0: egress, route, public_cidrs default, admin_cidrs refusal"
    assert _resources(doc, "aws_vpc_security_group_egress_rule")["all"]["cidr_ipv4"] == '"0.0.0.0/0"'
    variables = {k.strip('"'): v for block in _load("variables.tf")["variable"] for k, v in block.items()}
    assert '!= "0.0.0.0/0"' in variables["admin_cidrs"]["validation"][0]["condition"]


def test_every_instance_is_in_its_roles_group_and_feeds_the_module() -> None:
    doc = _load("main.tf")
    host = _resources(doc, "aws_instance")["host"]
    assert host["vpc_security_group_ids"] == ["${aws_security_group.role[each.value].id}"]
    assert host["metadata_options"][0]["http_tokens"] == '"required"'
    assert host["root_block_device"][0]["encrypted"] is True
    module = {k.strip('"'): v for k, v in doc["module"][0].items()}["rustchat"]
    assert _unquote(module["source"]) == "../modules/rustchat-ansible"
    assert module["hosts"] == "${local.hosts}" and module["ssh_allow_cidrs"] == "${var.admin_cidrs}"
    assert (tf.AWS / Path(_unquote(module["source"])) / "main.tf").is_file()
