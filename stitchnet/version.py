"""The package version, in a module of its own so that code inside the package can name it
without importing the package root (whose `__init__` imports half the package)."""

__version__ = "0.1.0"
