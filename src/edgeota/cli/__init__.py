"""The ``edgeota`` command line: thin Typer commands that call services and print with Rich."""
