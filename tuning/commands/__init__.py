"""One module per ``rigforge`` subcommand; each exposes a click command named ``command``."""
