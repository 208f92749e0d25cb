"""Mail as data: addresses, glob patterns on them and message text, parsed and checked (no I/O)."""
