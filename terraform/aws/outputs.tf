output "url" {
  description = "Where users open RustChat (self-signed certificate until nginx_tls_cert/key are set in extra_vars)."
  value       = module.rustchat.url
}

output "lb_public_ips" {
  description = "Public addresses of the load balancers (point server_name's DNS records here)."
  value       = [for name, role in local.machines : aws_instance.host[name].public_ip if role == "lb"]
}

output "hosts" {
  description = "Every machine: role, public and private address, instance id."
  value = {
    for name, role in local.machines : name => {
      role            = role
      public_address  = aws_instance.host[name].public_ip
      private_address = aws_instance.host[name].private_ip
      instance_id     = aws_instance.host[name].id
    }
  }
}

output "ssh_commands" {
  description = "How to log in to each machine."
  value = {
    for name, role in local.machines : name => join(" ", compact([
      "ssh",
      var.ssh_private_key_file == null ? "" : "-i ${var.ssh_private_key_file}",
      "${var.ssh_user}@${aws_instance.host[name].public_ip}",
    ]))
  }
}

output "security_group_ids" {
  description = "The security group of each role."
  value       = { for role, sg in aws_security_group.role : role => sg.id }
}

output "vpc_id" {
  description = "The VPC."
  value       = aws_vpc.this.id
}

output "inventory_path" {
  description = "The rendered Ansible inventory, for running ansible-playbook by hand."
  value       = module.rustchat.inventory_path
}

output "admin_password_file" {
  description = "File with the first admin's password (user admin), on this machine."
  value       = module.rustchat.admin_password_file
}

output "ansible_command" {
  description = "The playbook command each rollout runs."
  value       = module.rustchat.ansible_command
}
