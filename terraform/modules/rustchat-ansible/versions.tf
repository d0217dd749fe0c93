terraform {
  # terraform_data (1.4), `terraform test` with run blocks (1.6). No provider: the module only
  # renders files and runs Ansible on the machine that runs Terraform.
  required_version = ">= 1.6"
}
