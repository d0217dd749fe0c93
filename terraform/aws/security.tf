# One security group per role. The same rules as each host's own nftables firewall (role common):
#   lb        80, 443 <- public_cidrs
#   app       3000    <- lb only
#   postgres  5432    <- app only
#   redis     6379    <- app only
#   every role 22     <- admin_cidrs
# Outbound is open: the hosts install Debian packages from the mirrors.

locals {
  # The roles' default ports (ansible/roles/*/defaults/main.yml).
  ports = {
    http     = 80
    https    = 443
    app      = 3000
    postgres = 5432
    redis    = 6379
    ssh      = 22
  }
  roles = ["lb", "app", "postgres", "redis"]

  # (role, admin network) pairs for the SSH rules.
  ssh_rules = { for pair in setproduct(local.roles, var.admin_cidrs) : "${pair[0]} ${pair[1]}" => { role = pair[0], cidr = pair[1] } }
  # role => the port it serves and the only role admitted to it.
  service_rules = {
    app      = { port = local.ports.app, from = "lb", description = "gunicorn from the load balancers only" }
    postgres = { port = local.ports.postgres, from = "app", description = "PostgreSQL from the app nodes only" }
    redis    = { port = local.ports.redis, from = "app", description = "Redis from the app nodes only" }
  }
  # (port, public network) pairs for the load balancers.
  public_rules = { for pair in setproduct(["http", "https"], var.public_cidrs) : "${pair[0]} ${pair[1]}" => { port = local.ports[pair[0]], cidr = pair[1] } }
}

resource "aws_security_group" "role" {
  for_each = toset(local.roles)

  name        = "${var.name}-${each.key}"
  description = "RustChat ${each.key} hosts"
  vpc_id      = aws_vpc.this.id
  tags        = { Name = "${var.name}-${each.key}" }
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  for_each = local.ssh_rules

  security_group_id = aws_security_group.role[each.value.role].id
  description       = "ssh from the admin network"
  ip_protocol       = "tcp"
  from_port         = local.ports.ssh
  to_port           = local.ports.ssh
  cidr_ipv4         = each.value.cidr
}

resource "aws_vpc_security_group_ingress_rule" "lb_public" {
  for_each = local.public_rules

  security_group_id = aws_security_group.role["lb"].id
  description       = "clients to nginx"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.cidr
}

# Each back-end service admits only the role in front of it.
resource "aws_vpc_security_group_ingress_rule" "service" {
  for_each = local.service_rules

  security_group_id            = aws_security_group.role[each.key].id
  description                  = each.value.description
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = aws_security_group.role[each.value.from].id
}

resource "aws_vpc_security_group_egress_rule" "all" {
  for_each = aws_security_group.role

  security_group_id = each.value.id
  description       = "packages from the Debian mirrors, time, DNS"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}
