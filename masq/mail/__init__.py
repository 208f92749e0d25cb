"""Mail as data: addresses and message text, parsed and checked (no I/O)."""
