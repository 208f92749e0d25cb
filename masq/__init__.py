"""masq: a mail transfer agent for small, often-offline Linux devices.

The package root only names the version; everything else is imported where it is needed, so
that `sendmail` starts fast (each path imports only what it needs).
"""

__version__ = "0.1.0"
