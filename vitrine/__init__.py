"""vitrine: a visual recommender that retailers run as a service, with A/B experiments built in.

The roof of the project: the CLI, the demo, the embedded stack launcher and the benchmarks.
Nothing else imports it (docs/architecture.md).
"""

from core import __version__

__all__ = ["__version__"]
