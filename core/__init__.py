"""The stylecam engine. Never imports Qt."""

__version__ = "0.1.0"
