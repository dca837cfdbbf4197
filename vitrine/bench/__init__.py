"""Every benchmark behind `vitrine bench ...`: each prints a table, or one JSON object with --json."""
