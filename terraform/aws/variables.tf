# ---- where ---------------------------------------------------------------------------------------

variable "region" {
  description = "AWS region, e.g. eu-central-1."
  type        = string
  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as eu-central-1."
  }
}

variable "name" {
  description = "Name of this cluster: prefixes every resource's Name tag and the key pair."
  type        = string
  default     = "rustchat"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}$", var.name))
    error_message = "name must be lower-case letters, digits and '-', starting with a letter, at most 31 characters."
  }
}

variable "availability_zone" {
  description = "Availability zone of the subnet; null = the region's first available one."
  type        = string
  default     = null
}

variable "vpc_cidr" {
  description = "The VPC's address range."
  type        = string
  default     = "10.42.0.0/16"
  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "vpc_cidr must be a CIDR block such as 10.42.0.0/16."
  }
}

variable "subnet_cidr" {
  description = "The subnet every host is in (inside vpc_cidr); the hosts talk to each other on it."
  type        = string
  default     = "10.42.1.0/24"
  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be a CIDR block such as 10.42.1.0/24."
  }
}

variable "tags" {
  description = "More tags for every resource (Project and Cluster are always set)."
  type        = map(string)
  default     = {}
}

# ---- who may connect -------------------------------------------------------------------------

variable "admin_cidrs" {
  description = "Networks allowed to SSH into every host (security groups and each host's firewall); must include the machine running Terraform, which runs Ansible over SSH."
  type        = list(string)
  validation {
    condition     = length(var.admin_cidrs) > 0 && alltrue([for c in var.admin_cidrs : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "admin_cidrs needs at least one IPv4 network in CIDR notation, and not 0.0.0.0/0 (e.g. your address with /32)."
  }
}

variable "public_cidrs" {
  description = "IPv4 networks allowed to reach the load balancers on HTTP and HTTPS."
  type        = list(string)
  default     = ["0.0.0.0/0"]
  validation {
    condition     = length(var.public_cidrs) > 0 && alltrue([for c in var.public_cidrs : can(cidrnetmask(c))])
    error_message = "public_cidrs needs at least one IPv4 network in CIDR notation."
  }
}

# ---- SSH key ---------------------------------------------------------------------------------

variable "ssh_public_key" {
  description = "OpenSSH public key installed for the image's user (the content, e.g. file(\"~/.ssh/rustchat.pub\"))."
  type        = string
  validation {
    condition     = can(regex("^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+( .*)?$", trimspace(var.ssh_public_key)))
    error_message = "ssh_public_key must be one OpenSSH public key line (ssh-ed25519 AAAA... comment)."
  }
}

variable "ssh_private_key_file" {
  description = "Path of the matching private key on the machine running Terraform (Ansible logs in with it); null = ssh's defaults and agent."
  type        = string
  default     = null
}

# ---- machines --------------------------------------------------------------------------------

variable "ami_id" {
  description = "AMI for every host (Debian 12); null = the newest official Debian 12 image for the architecture."
  type        = string
  default     = null
}

variable "architecture" {
  description = "CPU architecture of the default AMI: x86_64 or arm64 (choose instance types to match)."
  type        = string
  default     = "x86_64"
  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture must be x86_64 or arm64."
  }
}

variable "ssh_user" {
  description = "The image's login user with sudo (admin on Debian's official images)."
  type        = string
  default     = "admin"
}

variable "lb_count" {
  description = "Number of load balancers (nginx)."
  type        = number
  default     = 1
  validation {
    condition     = var.lb_count >= 1 && floor(var.lb_count) == var.lb_count
    error_message = "lb_count must be a whole number >= 1."
  }
}

variable "app_count" {
  description = "Number of app nodes (gunicorn)."
  type        = number
  default     = 3
  validation {
    condition     = var.app_count >= 1 && floor(var.app_count) == var.app_count
    error_message = "app_count must be a whole number >= 1."
  }
}

variable "instance_types" {
  description = "Instance type per role."
  type = object({
    lb       = optional(string, "t3.small")
    postgres = optional(string, "t3.large")
    redis    = optional(string, "t3.small")
    app      = optional(string, "c6i.xlarge")
  })
  default = {}
}

variable "volume_sizes_gb" {
  description = "Root volume size (GB, gp3, encrypted) per role."
  type = object({
    lb       = optional(number, 10)
    postgres = optional(number, 50)
    redis    = optional(number, 10)
    app      = optional(number, 10)
  })
  default = {}
  validation {
    condition     = alltrue([for v in values(var.volume_sizes_gb) : v >= 8])
    error_message = "Every root volume needs at least 8 GB."
  }
}

# ---- the appliance (passed to the rustchat-ansible module) -------------------------------------

variable "preset" {
  description = "Size preset: small, medium or large (docs/sizing.md). medium suits 3 app nodes of 4 cores."
  type        = string
  default     = "medium"
}

variable "workers_per_node" {
  description = "gunicorn workers per app node; null = the preset's (one per core of the app instance type is a good value)."
  type        = number
  default     = null
}

variable "max_connections" {
  description = "PostgreSQL max_connections; null = the preset's."
  type        = number
  default     = null
}

variable "redis_maxmemory" {
  description = "Redis maxmemory (e.g. 1gb); null = the preset's."
  type        = string
  default     = null
}

variable "server_name" {
  description = "The site's DNS name (point it at lb_public_ips); '_' = reached by the load balancer's address."
  type        = string
  default     = "_"
}

variable "extra_vars" {
  description = "More Ansible variables for every host, e.g. nginx_tls_cert/nginx_tls_key (not secrets)."
  type        = any
  default     = {}
}

variable "inventory_dir" {
  description = "Where the rendered inventory and the generated secrets are kept on this machine; null = ./rustchat-inventory."
  type        = string
  default     = null
}

variable "ansible_playbook" {
  description = "The ansible-playbook command or path on this machine."
  type        = string
  default     = "ansible-playbook"
}

variable "ansible_extra_args" {
  description = "More ansible-playbook arguments, e.g. [\"--diff\"]."
  type        = list(string)
  default     = []
}

variable "rollout_trigger" {
  description = "Change it to run site.yml again on unchanged machines (e.g. the git revision to deploy)."
  type        = string
  default     = ""
}
