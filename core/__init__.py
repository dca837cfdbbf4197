"""The floor of vitrine: settings, machine facts and the event contracts. Imports nothing of the project."""

__version__ = "0.1.0"
