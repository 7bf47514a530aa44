"""The executable spec: YAML entries and their JSON schema, shipped as bn3d._spec."""
