"""Sans-IO protocol engines: bytes in, events out; calls in, bytes out.

Nothing in this package opens a socket or a file, reads a clock or the configuration.
"""
