"""vidsr: video super-resolution with the Real-ESRGAN generators."""

__version__ = "0.1.0"
