"""Command-line entry points: thin argparse layers over the library; only they turn errors into exit codes."""
