"""The base every layer stands on: the event loop, clock, sockets, log, exit codes, files."""
