"""``python -m vidsr``: the same command line as ``vidsr``."""

from vidsr.cli import main

if __name__ == "__main__":
    main()
