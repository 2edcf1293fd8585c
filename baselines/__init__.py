"""One file per method; each registers itself with ``@register_method`` and is listed in the package's
``discl_harness.methods`` entry points (pyproject.toml)."""
