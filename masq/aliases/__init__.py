"""Aliases: the aliases file (file.py) and the expansion of a recipient through it (expand.py)."""
