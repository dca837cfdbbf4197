"""CLI commands for vision (registered on vitrine.cli.app)."""
