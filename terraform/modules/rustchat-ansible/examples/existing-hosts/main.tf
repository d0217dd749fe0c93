# RustChat on hosts that already exist (your own servers, VMs made by other tools, the test hosts
# of `python -m tests.deploy.hosts up --no-deploy`): list them by role, apply, and Terraform runs
# ansible/site.yml against them. No provider is needed.

module "rustchat" {
  source = "../.."

  hosts = var.hosts

  ssh_user             = var.ssh_user
  ssh_private_key_file = var.ssh_private_key_file
  ssh_common_args      = var.ssh_common_args
  ssh_allow_cidrs      = var.ssh_allow_cidrs

  preset            = var.preset
  workers_per_node  = var.workers_per_node
  max_connections   = var.max_connections
  postgresql_ram_mb = var.postgresql_ram_mb
  redis_maxmemory   = var.redis_maxmemory
  server_name       = var.server_name
  extra_vars        = var.extra_vars

  inventory_dir      = var.inventory_dir
  ansible_playbook   = var.ansible_playbook
  ansible_extra_args = var.ansible_extra_args
  rollout_trigger    = var.rollout_trigger
  run_playbook       = var.run_playbook
}
