"""masq: a mail transfer agent for small, often-offline Linux devices.

The package root only names the version; everything else is imported where it is needed, so
that `sendmail` starts fast (see DESIGN.md, "sendmail starts fast").
"""

__version__ = "0.1.0"
