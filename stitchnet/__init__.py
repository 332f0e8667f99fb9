"""StitchNet: semi-supervised segmentation of COVID-19 lung CT."""

__version__ = "0.1.0"
