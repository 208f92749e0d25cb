"""msg-out: delivery agents (SMTP client, pipe, local) and bounces; results are Outcomes."""
