"""The package version (its own module so that any part can read it without
importing the package facade, which imports the client)."""

__version__ = "0.1.0"
