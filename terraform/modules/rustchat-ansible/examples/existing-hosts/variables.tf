variable "hosts" {
  description = "The hosts by role: { lb = [...], postgres = [one], redis = [one], app = [...] }, each { name, address, private_address, ssh_user } (app hosts also workers). A host may be listed under several roles (same name, same address). See the module's variables.tf."
  type        = any
}

variable "ssh_user" {
  description = "SSH user on the hosts (root, or a user with sudo)."
  type        = string
  default     = "root"
}

variable "ssh_private_key_file" {
  description = "Private key for SSH; null = ssh's defaults and agent."
  type        = string
  default     = null
}

variable "ssh_common_args" {
  description = "Extra ssh options (the default trusts a host key on first use)."
  type        = string
  default     = "-o StrictHostKeyChecking=accept-new"
}

variable "ssh_allow_cidrs" {
  description = "Networks each host's firewall admits to SSH; must include this machine."
  type        = list(string)
}

variable "preset" {
  description = "Size preset: small, medium or large (docs/sizing.md)."
  type        = string
  default     = "small"
}

variable "workers_per_node" {
  description = "gunicorn workers per app node; null = the preset's."
  type        = number
  default     = null
}

variable "max_connections" {
  description = "PostgreSQL max_connections; null = the preset's."
  type        = number
  default     = null
}

variable "postgresql_ram_mb" {
  description = "RAM (MB) PostgreSQL's memory settings assume; null = the database host's."
  type        = number
  default     = null
}

variable "redis_maxmemory" {
  description = "Redis maxmemory (e.g. 512mb); null = the preset's."
  type        = string
  default     = null
}

variable "server_name" {
  description = "The site's DNS name; '_' = reached by the load balancer's address."
  type        = string
  default     = "_"
}

variable "extra_vars" {
  description = "More Ansible variables for every host (not secrets)."
  type        = any
  default     = {}
}

variable "inventory_dir" {
  description = "Where the inventory and the generated secrets are kept; null = ./rustchat-inventory."
  type        = string
  default     = null
}

variable "ansible_playbook" {
  description = "The ansible-playbook command or path."
  type        = string
  default     = "ansible-playbook"
}

variable "ansible_extra_args" {
  description = "More ansible-playbook arguments, e.g. [\"--diff\"]."
  type        = list(string)
  default     = []
}

variable "rollout_trigger" {
  description = "Change it to run the playbook again with the same inventory (e.g. a git revision)."
  type        = string
  default     = ""
}

variable "run_playbook" {
  description = "false = only write the inventory (to run ansible-playbook yourself)."
  type        = bool
  default     = true
}
