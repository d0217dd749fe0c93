# The test hosts of this checkout: `python -m tests.deploy.hosts up --no-deploy` (root) makes
# these six Debian 12 containers on the private bridge 10.231.0.0/24; then
#   terraform init && terraform apply -var-file=test-hosts.tfvars
hosts = {
  # (inventory names need not be the containers' names; lb1 keeps clear of the group name lb)
  lb       = [{ name = "lb1", address = "10.231.0.10" }]
  postgres = [{ name = "db", address = "10.231.0.20" }]
  redis    = [{ name = "redis", address = "10.231.0.30" }]
  app = [
    { name = "app1", address = "10.231.0.41" },
    { name = "app2", address = "10.231.0.42" },
    { name = "app3", address = "10.231.0.43" },
  ]
}

# The harness's key; the hosts are new every time, so their host keys are not remembered.
ssh_private_key_file = "/var/cache/rustchat-test-hosts/ssh/id_ed25519"
ssh_common_args      = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
ssh_allow_cidrs      = ["10.231.0.1/32"]

# Small enough for a 2-core machine running all six hosts (as tests/deploy/hosts.py's GROUP_VARS).
preset            = "small"
workers_per_node  = 2
postgresql_ram_mb = 1024
redis_maxmemory   = "512mb"
extra_vars        = { common_apt_cache_valid_time = 86400 }
