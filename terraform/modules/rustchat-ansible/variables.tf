# ---- hosts, by role (the inventory groups of ansible/site.yml) --------------------------------
#
# Every host is { name, address, private_address, ssh_user, workers }:
#   name             inventory host name (also the node id prefix the app reports in /api/v1/health)
#   address          how the machine running Terraform reaches the host over SSH (public IP or DNS)
#   private_address  the address the host's services bind to and its peers connect to; null = the
#                    address of the host's default-route interface (Ansible's fact)
#   ssh_user         this host's SSH user; null = var.ssh_user
#   workers          app hosts only: gunicorn workers on this node; null = var.workers_per_node
# A host may hold several roles (e.g. PostgreSQL and Redis on one machine): list it under each
# role with the same name and the same address.

variable "hosts" {
  description = "The hosts by role (the inventory groups of site.yml): { lb = [...], postgres = [one], redis = [one], app = [...], monitoring = [...] (optional: Prometheus and the exporters) }, each host { name, address, private_address, ssh_user, workers }."
  type = object({
    lb = list(object({
      name            = string
      address         = string
      private_address = optional(string)
      ssh_user        = optional(string)
    }))
    postgres = list(object({
      name            = string
      address         = string
      private_address = optional(string)
      ssh_user        = optional(string)
    }))
    redis = list(object({
      name            = string
      address         = string
      private_address = optional(string)
      ssh_user        = optional(string)
    }))
    app = list(object({
      name            = string
      address         = string
      private_address = optional(string)
      ssh_user        = optional(string)
      workers         = optional(number)
    }))
    monitoring = optional(list(object({
      name            = string
      address         = string
      private_address = optional(string)
      ssh_user        = optional(string)
    })), [])
  })
  nullable = false

  validation {
    condition     = length(var.hosts.lb) >= 1 && length(var.hosts.app) >= 1
    error_message = "hosts needs at least one lb and one app host."
  }
  validation {
    condition     = length(var.hosts.postgres) == 1 && length(var.hosts.redis) == 1
    error_message = "hosts needs exactly one postgres and one redis host (site.yml configures a single PostgreSQL and a single Redis server; they may be the same host)."
  }
  validation {
    condition = alltrue(flatten([for role in ["lb", "postgres", "redis", "app", "monitoring"] : [
      for h in var.hosts[role] : can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", h.name)) && h.address != "" && length(regexall("\\s", h.address)) == 0
    ]]))
    error_message = "Every host needs a name of letters, digits, '.', '_' and '-' (starting with a letter or digit) and a non-empty address without spaces."
  }
  validation {
    condition = alltrue(flatten([for role in ["lb", "postgres", "redis", "app", "monitoring"] : [
      for h in var.hosts[role] : h.private_address == null ? true : can(cidrhost("${h.private_address}/${strcontains(h.private_address, ":") ? 128 : 32}", 0))
    ]]))
    error_message = "A private_address must be an IPv4 or IPv6 address (or null for the host's default-route address)."
  }
  validation {
    condition     = alltrue([for role in ["lb", "app", "monitoring"] : length(distinct(var.hosts[role][*].name)) == length(var.hosts[role])])
    error_message = "Host names must be unique within a role."
  }
  validation {
    condition     = alltrue([for h in var.hosts.app : h.workers == null ? true : (h.workers >= 1 && floor(h.workers) == h.workers)])
    error_message = "An app host's workers must be a whole number >= 1 (or null for workers_per_node)."
  }
}

# ---- SSH ---------------------------------------------------------------------------------------

variable "ssh_user" {
  description = "SSH user on every host that sets no ssh_user of its own (root, or a user with sudo such as Debian cloud images' admin)."
  type        = string
  default     = "root"
  nullable    = false
  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]*$", var.ssh_user))
    error_message = "ssh_user must be a user name (lower-case letters, digits, '_' and '-')."
  }
}

variable "become" {
  description = "Whether Ansible uses sudo on the hosts; null = whenever the SSH user is not root."
  type        = bool
  default     = null
}

variable "ssh_private_key_file" {
  description = "Private key Ansible logs in with (a path on the machine running Terraform); null = ssh's defaults and agent."
  type        = string
  default     = null
}

variable "ssh_common_args" {
  description = "Extra ssh options for every connection. The default trusts a host key on first use and refuses a changed one."
  type        = string
  default     = "-o StrictHostKeyChecking=accept-new"
  nullable    = false
}

variable "ssh_allow_cidrs" {
  description = "Networks each host's firewall admits to SSH (your admin or bastion network; it must include the machine running Terraform)."
  type        = list(string)
  nullable    = false
  validation {
    condition     = length(var.ssh_allow_cidrs) > 0 && alltrue([for c in var.ssh_allow_cidrs : can(cidrhost(c, 0))])
    error_message = "ssh_allow_cidrs needs at least one network in CIDR notation, e.g. 198.51.100.0/24."
  }
}

# ---- sizing (docs/sizing.md; computed by ansible/ with app/rustchat/appliance/sizing.py) ------

variable "preset" {
  description = "Size preset (rustchat_preset): small, medium or large. It supplies workers, max_connections, pool limits and memory settings that the inputs below do not set."
  type        = string
  default     = "small"
  nullable    = false
  validation {
    # The names of rustchat.appliance.sizing.PRESETS (tests/terraform checks they agree).
    condition     = contains(["small", "medium", "large"], var.preset)
    error_message = "preset must be one of small, medium, large."
  }
}

variable "workers_per_node" {
  description = "gunicorn workers on every app node (rustchat_workers; one per core); null = the preset's. An app host's own workers wins."
  type        = number
  default     = null
  validation {
    condition     = var.workers_per_node == null ? true : (var.workers_per_node >= 1 && floor(var.workers_per_node) == var.workers_per_node)
    error_message = "workers_per_node must be a whole number >= 1."
  }
}

variable "max_connections" {
  description = "PostgreSQL max_connections (postgresql_max_connections); null = the preset's. Every app process's pool is sized from it; site.yml stops before touching a host when the pools do not fit."
  type        = number
  default     = null
  validation {
    condition     = var.max_connections == null ? true : (var.max_connections >= 10 && floor(var.max_connections) == var.max_connections)
    error_message = "max_connections must be a whole number >= 10."
  }
}

variable "postgresql_ram_mb" {
  description = "RAM (MB) PostgreSQL's memory settings are computed from; null = the database host's memory."
  type        = number
  default     = null
  validation {
    condition     = var.postgresql_ram_mb == null ? true : (var.postgresql_ram_mb >= 256 && floor(var.postgresql_ram_mb) == var.postgresql_ram_mb)
    error_message = "postgresql_ram_mb must be a whole number of megabytes >= 256."
  }
}

variable "redis_maxmemory" {
  description = "Redis maxmemory (redis_maxmemory, e.g. 512mb, 1gb); null = the preset's."
  type        = string
  default     = null
  validation {
    condition     = var.redis_maxmemory == null ? true : can(regex("^[0-9]+(b|k|kb|m|mb|g|gb)?$", lower(var.redis_maxmemory)))
    error_message = "redis_maxmemory must be a Redis memory size such as 512mb or 1gb."
  }
}

# ---- the site ----------------------------------------------------------------------------------

variable "server_name" {
  description = "The name users open (nginx_server_name); '_' = any name, reached by the load balancer's address."
  type        = string
  default     = "_"
  nullable    = false
  validation {
    condition     = can(regex("^(_|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)$", var.server_name))
    error_message = "server_name must be a DNS name or '_'."
  }
}

variable "public_allow_cidrs" {
  description = "Networks the load balancers' firewalls admit to HTTP(S) (common_firewall_public_allow)."
  type        = list(string)
  default     = ["0.0.0.0/0", "::/0"]
  nullable    = false
  validation {
    condition     = length(var.public_allow_cidrs) > 0 && alltrue([for c in var.public_allow_cidrs : can(cidrhost(c, 0))])
    error_message = "public_allow_cidrs needs at least one network in CIDR notation."
  }
}

variable "extra_vars" {
  description = "More Ansible variables for every host (group_vars/all.yml), e.g. { nginx_tls_cert = \"...\" }; they win over the ones this module sets. Not for secrets: they are stored in Terraform's state (use ansible-vault or the generated credentials instead)."
  type        = any
  default     = {}
  nullable    = false
  validation {
    condition     = can(keys(var.extra_vars))
    error_message = "extra_vars must be a map of Ansible variable names to values."
  }
}

# ---- where and how Ansible runs ----------------------------------------------------------------

variable "inventory_dir" {
  description = "Directory on the machine running Terraform for the rendered inventory (hosts.yml, group_vars/all.yml) and the secrets site.yml generates (credentials/, mode 0600). Keep it: a new directory means new secrets. null = rustchat-inventory/ in the root module."
  type        = string
  default     = null
}

variable "remove_credentials_on_destroy" {
  description = "Whether `terraform destroy` also deletes the generated secrets (credentials/). Leave false for hosts that outlive the Terraform state; true where destroy also deletes the hosts."
  type        = bool
  default     = false
  nullable    = false
}

variable "ansible_dir" {
  description = "The project's ansible/ directory (site.yml, roles, ansible.cfg); null = the one in this checkout, next to terraform/."
  type        = string
  default     = null
}

variable "playbook" {
  description = "Playbook in ansible_dir that a rollout runs: site.yml, or rolling-update.yml to restart every app node one at a time."
  type        = string
  default     = "site.yml"
  nullable    = false
  validation {
    condition     = contains(["site.yml", "rolling-update.yml"], var.playbook)
    error_message = "playbook must be site.yml or rolling-update.yml."
  }
}

variable "ansible_playbook" {
  description = "The ansible-playbook command (a name on PATH or a path); `ansible` is looked up next to it."
  type        = string
  default     = "ansible-playbook"
  nullable    = false
}

variable "ansible_extra_args" {
  description = "More ansible-playbook arguments, one per element, e.g. [\"--diff\"] or [\"-e\", \"rustchat_source_dir=/srv/rustchat\"]."
  type        = list(string)
  default     = []
  nullable    = false
}

variable "python" {
  description = "Python 3 on the machine running Terraform, for the module's small runner (files/rollout.py)."
  type        = string
  default     = "python3"
  nullable    = false
}

variable "wait_for_hosts_timeout" {
  description = "Seconds to wait for every host to accept SSH before running the playbook (new cloud machines take a while); 0 = don't wait."
  type        = number
  default     = 300
  nullable    = false
  validation {
    condition     = var.wait_for_hosts_timeout >= 0
    error_message = "wait_for_hosts_timeout must be >= 0."
  }
}

variable "run_playbook" {
  description = "Whether apply runs the playbook; false only writes the inventory (to run ansible-playbook yourself)."
  type        = bool
  default     = true
  nullable    = false
}

variable "rollout_trigger" {
  description = "Any string; changing it runs the playbook again although the inventory did not change (e.g. the git revision to deploy)."
  type        = string
  default     = ""
  nullable    = false
}
