"""Postgres side of vitrine: models, migrations, sessions, vector queries, the embedded server."""
