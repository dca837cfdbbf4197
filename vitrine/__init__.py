"""vitrine: a visual recommender that retailers run as a service, with A/B experiments built in."""

__version__ = "0.1.0"
