"""Experiment assignment and statistics: pure functions over sufficient statistics.

Only `experiments.loader` touches a database; everything else is pure and takes
the frozen dataclasses of `experiments.stats`.
"""
