terraform {
  required_version = ">= 1.6"

  # State stays on this machine: terraform.tfstate here, or elsewhere with
  # `terraform init -backend-config=path=/some/dir/terraform.tfstate`.
  backend "local" {}
}
