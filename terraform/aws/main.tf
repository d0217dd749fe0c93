# RustChat on AWS: network.tf (VPC, subnet), security.tf (a security group per role), the machines
# and the SSH key here, and the provider-independent module that renders the inventory from these
# machines and runs ansible/site.yml against them.

data "aws_ami" "debian12" {
  count       = var.ami_id == null ? 1 : 0
  most_recent = true
  owners      = ["136693071363"] # Debian's official cloud images

  filter {
    name   = "name"
    values = ["debian-12-${var.architecture == "arm64" ? "arm64" : "amd64"}-*"]
  }
  filter {
    name   = "architecture"
    values = [var.architecture]
  }
  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

locals {
  ami = coalesce(var.ami_id, one(data.aws_ami.debian12[*].id))

  # role => instance names, in order (lb1, app1, app2, ...; the single database and Redis hosts
  # are db1 and redis1).
  machines = merge(
    { for i in range(var.lb_count) : "lb${i + 1}" => "lb" },
    { db1 = "postgres", redis1 = "redis" },
    { for i in range(var.app_count) : "app${i + 1}" => "app" },
  )
}

resource "aws_key_pair" "admin" {
  key_name   = "${var.name}-admin"
  public_key = trimspace(var.ssh_public_key)
}

resource "aws_instance" "host" {
  for_each = local.machines

  ami                    = local.ami
  instance_type          = var.instance_types[each.value]
  subnet_id              = aws_subnet.hosts.id
  vpc_security_group_ids = [aws_security_group.role[each.value].id]
  key_name               = aws_key_pair.admin.key_name

  root_block_device {
    volume_type = "gp3"
    volume_size = var.volume_sizes_gb[each.value]
    encrypted   = true
  }

  metadata_options {
    http_tokens   = "required" # IMDSv2 only
    http_endpoint = "enabled"
  }

  tags = { Name = "${var.name}-${each.key}", Role = each.value }

  depends_on = [aws_route_table_association.hosts, aws_internet_gateway.this]
}

locals {
  # The machines by role, as the module takes them.
  hosts = {
    for role in ["lb", "postgres", "redis", "app"] : role => [
      for name, r in local.machines : {
        name            = name
        address         = aws_instance.host[name].public_ip
        private_address = aws_instance.host[name].private_ip
      } if r == role
    ]
  }
}

module "rustchat" {
  source = "../modules/rustchat-ansible"

  hosts = local.hosts

  ssh_user             = var.ssh_user
  ssh_private_key_file = var.ssh_private_key_file
  ssh_allow_cidrs      = var.admin_cidrs
  public_allow_cidrs   = var.public_cidrs

  preset           = var.preset
  workers_per_node = var.workers_per_node
  max_connections  = var.max_connections
  redis_maxmemory  = var.redis_maxmemory
  server_name      = var.server_name
  extra_vars       = var.extra_vars

  inventory_dir      = var.inventory_dir
  ansible_playbook   = var.ansible_playbook
  ansible_extra_args = var.ansible_extra_args
  rollout_trigger    = var.rollout_trigger

  # The machines go with `terraform destroy`, so their secrets may go too.
  remove_credentials_on_destroy = true
}
