"""Experiment assignment and statistics: pure functions over sufficient statistics.

Nothing here touches a database: everything takes the frozen dataclasses of
`experiments.stats`, which `db/experiment_stats.py` loads from Postgres.
"""
