"""tricorn bench: a load generator for any HTTP/1.1 server (see command.py for the command line)."""
