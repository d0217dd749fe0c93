# `terraform test` for the module's outputs: the rendered inventory and variables. Runs without any
# provider or host. tests/terraform/ runs it from pytest (with -var inventory_dir=<a temp dir>) and
# then checks the rendered files with Ansible's own ansible-inventory.

variables {
  hosts = {
    lb       = [{ name = "lb1", address = "203.0.113.10", private_address = "10.0.0.2" }]
    postgres = [{ name = "db1", address = "203.0.113.20", private_address = "10.0.0.5" }]
    redis    = [{ name = "cache1", address = "203.0.113.30", private_address = "10.0.0.7" }]
    app = [
      { name = "app1", address = "203.0.113.41", private_address = "10.0.1.1" },
      { name = "app2", address = "203.0.113.42", private_address = "10.0.1.2" },
    ]
  }
  ssh_allow_cidrs = ["198.51.100.0/24"]
  run_playbook    = false
}

run "groups_and_host_variables" {
  command = plan

  assert {
    condition = output.hosts_by_group == {
      lb = ["lb1"], postgres = ["db1"], redis = ["cache1"], app = ["app1", "app2"]
    }
    error_message = "hosts_by_group: ${jsonencode(output.hosts_by_group)}"
  }
  assert {
    condition = output.inventory_data.all.hosts == {
      lb1    = { ansible_host = "203.0.113.10", private_address = "10.0.0.2" }
      db1    = { ansible_host = "203.0.113.20", private_address = "10.0.0.5" }
      cache1 = { ansible_host = "203.0.113.30", private_address = "10.0.0.7" }
      app1   = { ansible_host = "203.0.113.41", private_address = "10.0.1.1" }
      app2   = { ansible_host = "203.0.113.42", private_address = "10.0.1.2" }
    }
    error_message = "host variables: ${jsonencode(output.inventory_data.all.hosts)}"
  }
  assert {
    condition     = keys(output.inventory_data.all.children) == ["app", "lb", "postgres", "redis"]
    error_message = "groups: ${jsonencode(keys(output.inventory_data.all.children))}"
  }
  assert {
    condition     = keys(output.inventory_data.all.children.app.hosts) == ["app1", "app2"]
    error_message = "app group: ${jsonencode(output.inventory_data.all.children.app)}"
  }
  # Root by default: no sudo, no key file (ssh's defaults).
  assert {
    condition = output.inventory_data.all.vars == {
      ansible_user               = "root"
      ansible_ssh_common_args    = "-o StrictHostKeyChecking=accept-new"
      ansible_python_interpreter = "/usr/bin/python3"
    }
    error_message = "all.vars: ${jsonencode(output.inventory_data.all.vars)}"
  }
  # The YAML file says the same as the value.
  assert {
    condition     = yamldecode(output.inventory) == output.inventory_data
    error_message = "hosts.yml does not decode to inventory_data:\n${output.inventory}"
  }
  assert {
    condition     = startswith(output.inventory, "# Ansible inventory for ansible/site.yml, written by Terraform")
    error_message = "hosts.yml lacks its header:\n${output.inventory}"
  }
  assert {
    condition     = output.url == "https://203.0.113.10/"
    error_message = "url: ${output.url}"
  }
}

run "sizing_defaults_leave_the_preset_in_charge" {
  command = plan

  # Only what was chosen is written: the preset's values come from the roles (sizing.py).
  assert {
    condition = jsonencode(output.ansible_variables) == jsonencode({
      rustchat_preset              = "small"
      nginx_server_name            = "_"
      common_firewall_ssh_allow    = ["198.51.100.0/24"]
      common_firewall_public_allow = ["0.0.0.0/0", "::/0"]
    })
    error_message = "variables: ${jsonencode(output.ansible_variables)}"
  }
  assert {
    condition     = jsonencode(yamldecode(output.group_vars)) == jsonencode(output.ansible_variables)
    error_message = "group_vars/all.yml does not decode to ansible_variables:\n${output.group_vars}"
  }
}

run "sizing_inputs_become_playbook_variables" {
  command = plan

  variables {
    preset            = "medium"
    workers_per_node  = 3
    max_connections   = 150
    postgresql_ram_mb = 2048
    redis_maxmemory   = "768mb"
    server_name       = "chat.example.com"
    extra_vars        = { nginx_ip_hash = true, rustchat_log = "debug" }
  }

  assert {
    condition = jsonencode(output.ansible_variables) == jsonencode({
      rustchat_preset              = "medium"
      rustchat_workers             = 3
      postgresql_max_connections   = 150
      postgresql_ram_mb            = 2048
      redis_maxmemory              = "768mb"
      nginx_server_name            = "chat.example.com"
      common_firewall_ssh_allow    = ["198.51.100.0/24"]
      common_firewall_public_allow = ["0.0.0.0/0", "::/0"]
      nginx_ip_hash                = true
      rustchat_log                 = "debug"
    })
    error_message = "variables: ${jsonencode(output.ansible_variables)}"
  }
  # Numbers stay numbers in the YAML (the sizing filters want integers).
  assert {
    condition     = strcontains(output.group_vars, "\"rustchat_workers\": 3\n") && strcontains(output.group_vars, "\"postgresql_max_connections\": 150\n")
    error_message = "group_vars/all.yml:\n${output.group_vars}"
  }
  assert {
    condition     = output.url == "https://chat.example.com/"
    error_message = "url: ${output.url}"
  }
}

run "one_host_for_postgres_and_redis_and_per_node_workers" {
  command = plan

  variables {
    hosts = {
      lb       = [{ name = "lb1", address = "10.9.0.10" }]
      postgres = [{ name = "data", address = "10.9.0.20" }]
      redis    = [{ name = "data", address = "10.9.0.20" }]
      app = [
        { name = "app1", address = "10.9.0.41", workers = 4 },
        { name = "app2", address = "10.9.0.42" },
      ]
    }
  }

  assert {
    condition     = output.hosts_by_group.postgres == ["data"] && output.hosts_by_group.redis == ["data"]
    error_message = "hosts_by_group: ${jsonencode(output.hosts_by_group)}"
  }
  # One host entry, in both groups; no private_address: Ansible uses the default-route address.
  assert {
    condition     = output.inventory_data.all.hosts.data == { ansible_host = "10.9.0.20" }
    error_message = "data: ${jsonencode(output.inventory_data.all.hosts.data)}"
  }
  assert {
    condition     = output.inventory_data.all.hosts.app1 == { ansible_host = "10.9.0.41", rustchat_workers = 4 }
    error_message = "app1: ${jsonencode(output.inventory_data.all.hosts.app1)}"
  }
  assert {
    condition     = output.inventory_data.all.hosts.app2 == { ansible_host = "10.9.0.42" }
    error_message = "app2: ${jsonencode(output.inventory_data.all.hosts.app2)}"
  }
}

run "a_sudo_user_and_a_key_file" {
  command = plan

  variables {
    ssh_user             = "admin"
    ssh_private_key_file = "/home/me/.ssh/rustchat"
    hosts                = merge(var.hosts, { lb = [{ name = "lb1", address = "203.0.113.10", ssh_user = "root" }] })
  }

  assert {
    condition     = output.inventory_data.all.vars.ansible_user == "admin" && output.inventory_data.all.vars.ansible_ssh_private_key_file == "/home/me/.ssh/rustchat"
    error_message = "all.vars: ${jsonencode(output.inventory_data.all.vars)}"
  }
  # sudo where the user is not root; a host's own user wins.
  assert {
    condition     = output.inventory_data.all.hosts.app1.ansible_become && output.inventory_data.all.hosts.db1.ansible_become
    error_message = "hosts: ${jsonencode(output.inventory_data.all.hosts)}"
  }
  assert {
    condition     = output.inventory_data.all.hosts.lb1 == { ansible_host = "203.0.113.10", ansible_user = "root" }
    error_message = "lb1: ${jsonencode(output.inventory_data.all.hosts.lb1)}"
  }
}

run "the_command_runs_the_projects_own_site_yml" {
  command = plan

  variables {
    ansible_extra_args = ["--diff"]
  }

  assert {
    condition     = endswith(output.ansible_command, "/hosts.yml site.yml --diff") && strcontains(output.ansible_command, "cd ${abspath("${path.module}/../../../ansible")} && ansible-playbook -i ")
    error_message = "ansible_command: ${output.ansible_command}"
  }
}

# ---- what is refused -----------------------------------------------------------------------

run "an_optional_monitoring_group" {
  command = plan

  variables {
    hosts = {
      lb         = [{ name = "lb1", address = "203.0.113.10", private_address = "10.0.0.2" }]
      postgres   = [{ name = "db1", address = "203.0.113.20", private_address = "10.0.0.5" }]
      redis      = [{ name = "cache1", address = "203.0.113.30", private_address = "10.0.0.7" }]
      app        = [{ name = "app1", address = "203.0.113.41", private_address = "10.0.1.1" }]
      monitoring = [{ name = "mon1", address = "203.0.113.50", private_address = "10.0.0.9" }]
    }
  }

  assert {
    condition     = keys(output.inventory_data.all.children) == ["app", "lb", "monitoring", "postgres", "redis"]
    error_message = "groups: ${jsonencode(keys(output.inventory_data.all.children))}"
  }
  assert {
    condition     = output.inventory_data.all.children.monitoring == { hosts = { mon1 = {} } }
    error_message = "monitoring group: ${jsonencode(output.inventory_data.all.children.monitoring)}"
  }
  assert {
    condition     = output.inventory_data.all.hosts.mon1 == { ansible_host = "203.0.113.50", private_address = "10.0.0.9" }
    error_message = "mon1: ${jsonencode(output.inventory_data.all.hosts.mon1)}"
  }
}

run "two_postgres_hosts_are_refused" {
  command = plan
  variables {
    hosts = merge(var.hosts, { postgres = [{ name = "db1", address = "10.9.0.20" }, { name = "db2", address = "10.9.0.21" }] })
  }
  expect_failures = [var.hosts]
}

run "no_app_host_is_refused" {
  command = plan
  variables {
    hosts = merge(var.hosts, { app = [] })
  }
  expect_failures = [var.hosts]
}

run "an_unknown_preset_is_refused" {
  command = plan
  variables {
    preset = "huge"
  }
  expect_failures = [var.preset]
}

run "fractional_workers_are_refused" {
  command = plan
  variables {
    workers_per_node = 2.5
  }
  expect_failures = [var.workers_per_node]
}

run "a_bad_private_address_is_refused" {
  command = plan
  variables {
    hosts = merge(var.hosts, { app = [{ name = "app1", address = "203.0.113.41", private_address = "10.0.1" }] })
  }
  expect_failures = [var.hosts]
}

run "ssh_must_be_limited_to_some_network" {
  command = plan
  variables {
    ssh_allow_cidrs = []
  }
  expect_failures = [var.ssh_allow_cidrs]
}

run "a_shared_host_with_two_addresses_is_refused" {
  command = plan
  variables {
    hosts = merge(var.hosts, { postgres = [{ name = "data", address = "10.9.0.20" }], redis = [{ name = "data", address = "10.9.0.21" }] })
  }
  expect_failures = [terraform_data.rollout]
}

# ---- apply: the files on disk (no playbook: run_playbook = false) ---------------------------

run "apply_writes_the_inventory_files" {
  command = apply

  assert {
    condition     = file("${output.inventory_dir}/hosts.yml") == output.inventory
    error_message = "hosts.yml on disk differs from the output"
  }
  assert {
    condition     = file("${output.inventory_dir}/group_vars/all.yml") == output.group_vars
    error_message = "group_vars/all.yml on disk differs from the output"
  }
  assert {
    condition     = output.inventory_path == "${output.inventory_dir}/hosts.yml"
    error_message = "inventory_path: ${output.inventory_path}"
  }
}
