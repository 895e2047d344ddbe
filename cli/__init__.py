"""saas-cli: the command-line interface (importable as `saas_cli`)."""
