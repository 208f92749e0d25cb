"""msg-in stages: the SMTP server (network and stdio). Local submission is masq/cli/submit.py."""
