"""Local mailboxes: maildir and mbox delivery and what both share (write.py)."""
