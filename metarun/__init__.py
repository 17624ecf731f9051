"""metarun: a command-line runner for meta-learning on few-shot regression."""

__version__ = "0.1.0"
