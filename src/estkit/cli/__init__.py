"""Command-line entry points: thin commands over the packages."""
