"""Search spaces: the YAML files, the ranges in them, and `wsss-tune spaces check`."""
