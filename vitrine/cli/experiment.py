"""CLI commands for experiment (registered on vitrine.cli.app)."""
