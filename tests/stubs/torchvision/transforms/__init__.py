"""Stand-in: see ``tests/stubs/torchvision/__init__.py``."""
