"""The base every layer stands on: loop, clock, sockets, log, exits, files, control socket."""
