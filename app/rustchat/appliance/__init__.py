"""The appliance: every host's configuration rendered from one topology.

`sizing` holds the arithmetic (pool budgets, memory settings, presets) and is the only place it
lives; `filters` exposes it to Jinja and to Ansible's filter plugins; `topology` turns an
inventory-like dict into per-host variables; `render` runs the templates under `templates/`.
"""
