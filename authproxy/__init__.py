"""authproxy: an OpenID Connect authentication reverse proxy."""

__version__ = "0.1.0"
