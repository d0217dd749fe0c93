# Renders the Ansible inventory of ansible/site.yml from hosts given by role and runs that very
# playbook (not a copy) on the machine running Terraform. No provider: terraform_data and
# local-exec only. The sizing arithmetic is not repeated here: the module passes the sizing
# inputs to the playbook, whose first play computes and checks the pools (docs/sizing.md).

locals {
  # Inventory groups in site.yml's order of plays; only app hosts have workers. The optional
  # monitoring group is left out of the inventory when it has no host.
  groups = {
    for role in ["lb", "postgres", "redis", "app", "monitoring"] : role => [
      for h in var.hosts[role] : merge({ workers = null }, h)
    ] if role != "monitoring" || length(var.hosts.monitoring) > 0
  }

  # name => every entry of that host (one per role it holds)
  entries = { for e in flatten([for group, hosts in local.groups : [for h in hosts : merge(h, { group = group })]]) : e.name => e... }

  # A host listed under several roles must be the same machine in each.
  inconsistent_hosts = sort([for name, es in local.entries : name if length(distinct([for e in es : [e.address, coalesce(e.private_address, "-"), coalesce(e.ssh_user, "-")]])) > 1])

  host_vars = {
    for name, es in local.entries : name => merge(
      { ansible_host = es[0].address },
      { for k, v in { private_address = es[0].private_address, ansible_user = es[0].ssh_user } : k => v if v != null },
      { for k, v in { rustchat_workers = one([for e in es : e.workers if e.group == "app"]) } : k => v if v != null },
      # sudo on every host not reached as root, unless var.become says otherwise.
      { for k, v in { ansible_become = true } : k => v if coalesce(var.become, coalesce(es[0].ssh_user, var.ssh_user) != "root") },
    )
  }

  inventory = {
    all = {
      vars = merge(
        {
          ansible_user               = var.ssh_user
          ansible_ssh_common_args    = var.ssh_common_args
          ansible_python_interpreter = "/usr/bin/python3"
        },
        { for k, v in { ansible_ssh_private_key_file = var.ssh_private_key_file } : k => v if v != null },
      )
      hosts = local.host_vars
      children = {
        for group, hosts in local.groups : group => {
          hosts = { for h in hosts : h.name => {} }
        }
      }
    }
  }

  # Only what was chosen: everything else keeps the roles' defaults and the preset's values.
  group_vars = merge(
    {
      rustchat_preset              = var.preset
      nginx_server_name            = var.server_name
      common_firewall_ssh_allow    = var.ssh_allow_cidrs
      common_firewall_public_allow = var.public_allow_cidrs
    },
    { for k, v in {
      rustchat_workers           = var.workers_per_node
      postgresql_max_connections = var.max_connections
      postgresql_ram_mb          = var.postgresql_ram_mb
    } : k => v if v != null },
    { for k, v in { redis_maxmemory = var.redis_maxmemory } : k => v if v != null },
    var.extra_vars,
  )

  inventory_dir = abspath(coalesce(var.inventory_dir, "${path.root}/rustchat-inventory"))
  ansible_dir   = abspath(coalesce(var.ansible_dir, "${path.module}/../../../ansible"))

  inventory_yaml  = templatefile("${path.module}/templates/hosts.yml.tftpl", { inventory = local.inventory })
  group_vars_yaml = templatefile("${path.module}/templates/all.yml.tftpl", { variables = local.group_vars })

  runner = abspath("${path.module}/files/rollout.py")

  # What a rollout runs, for the outputs and for running it by hand.
  ansible_command = join(" ", concat(
    ["cd", local.ansible_dir, "&&", var.ansible_playbook, "-i", "${local.inventory_dir}/hosts.yml", var.playbook],
    var.ansible_extra_args,
  ))

  lb_addresses = var.hosts.lb[*].address
  url          = var.server_name == "_" ? "https://${local.lb_addresses[0]}/" : "https://${var.server_name}/"
}

# The inventory directory: made once; on destroy, the files Terraform wrote are removed (and the
# generated secrets, if asked to).
resource "terraform_data" "inventory_dir" {
  triggers_replace = [local.inventory_dir]

  input = {
    dir                = local.inventory_dir
    runner             = local.runner
    python             = var.python
    remove_credentials = var.remove_credentials_on_destroy ? "1" : "0"
  }

  provisioner "local-exec" {
    interpreter = [self.output.python, self.output.runner]
    command     = "init"
    environment = {
      RUSTCHAT_TF_INVENTORY_DIR = self.output.dir
    }
  }

  provisioner "local-exec" {
    when        = destroy
    interpreter = [self.output.python, self.output.runner]
    command     = "destroy"
    environment = {
      RUSTCHAT_TF_INVENTORY_DIR      = self.output.dir
      RUSTCHAT_TF_REMOVE_CREDENTIALS = self.output.remove_credentials
    }
  }
}

# One rollout: write the inventory, wait for SSH, run the playbook. Replaced (so run again) whenever
# the inventory, the variables or the command change, or rollout_trigger does. A failed playbook
# leaves it tainted, so the next apply runs it again.
resource "terraform_data" "rollout" {
  triggers_replace = [sha256(jsonencode({
    inventory  = local.inventory_yaml
    group_vars = local.group_vars_yaml
    command    = local.ansible_command
    run        = var.run_playbook
    trigger    = var.rollout_trigger
  }))]

  input = {
    inventory_path  = "${local.inventory_dir}/hosts.yml"
    group_vars_path = "${local.inventory_dir}/group_vars/all.yml"
  }

  lifecycle {
    precondition {
      condition     = length(local.inconsistent_hosts) == 0
      error_message = "A host listed under several roles must have the same address, private_address and ssh_user in each: ${join(", ", local.inconsistent_hosts)}."
    }
  }

  provisioner "local-exec" {
    interpreter = [var.python, local.runner]
    command     = "rollout"
    environment = {
      RUSTCHAT_TF_INVENTORY_DIR  = local.inventory_dir
      RUSTCHAT_TF_INVENTORY      = local.inventory_yaml
      RUSTCHAT_TF_GROUP_VARS     = local.group_vars_yaml
      RUSTCHAT_TF_ANSIBLE_DIR    = local.ansible_dir
      RUSTCHAT_TF_PLAYBOOK       = var.playbook
      RUSTCHAT_TF_ANSIBLE        = var.ansible_playbook
      RUSTCHAT_TF_EXTRA_ARGS     = jsonencode(var.ansible_extra_args)
      RUSTCHAT_TF_WAIT_FOR_HOSTS = tostring(var.wait_for_hosts_timeout)
      RUSTCHAT_TF_RUN_PLAYBOOK   = var.run_playbook ? "1" : "0"
    }
  }

  depends_on = [terraform_data.inventory_dir]
}
