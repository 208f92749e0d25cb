"""SMTP server session states: what each command and each engine step leads to.

Owns: the session states, `TRANSITIONS` (for each verb and command-reading state: the state
the command leads to once accepted, or the sequence error to answer), `STEPS` (the engine's
own moves: end of a transaction, SASL, the TLS handshake, closing) and `MODES` (how input is
read in each state). `smtp_server.SMTPServer._move` is the only code that changes the state,
and it changes it only as these tables say. Pure data: no code, no IO.
"""

from . import smtp_server_replies as R

# States in which command lines are read (the columns of TRANSITIONS). REFUSED: the
# greeting was a 554 (RFC 5321 section 3.1): every command but QUIT gets 503 until QUIT.
GREET, READY, MAIL, RCPT, CHUNK, REFUSED = "greet", "ready", "mail", "rcpt", "chunk", "refused"
# States in which something else is read: DATA text, a SASL exchange, nothing (TLS handshake
# pending, or closed).
DATA, AUTH, TLS, CLOSED = "data", "auth", "tls", "closed"
SAME = "same"  # the command leaves the state as it is
ANY = "*"
COLUMN = {GREET: 0, READY: 1, MAIL: 2, RCPT: 3, CHUNK: 4, REFUSED: 5}

_TXN = R.IN_TRANSACTION
_NO = R.REFUSED_SESSION
# verb: per current state, the state after the command is accepted, or the sequence error.
TRANSITIONS = {
    #            GREET         READY        MAIL            RCPT            CHUNK           REFUSED
    "HELO":     (READY,        READY,       READY,          READY,          READY,          _NO),
    "EHLO":     (READY,        READY,       READY,          READY,          READY,          _NO),
    "MAIL":     (R.NEED_HELO,  MAIL,        R.NESTED_MAIL,  R.NESTED_MAIL,  R.NESTED_MAIL,  _NO),
    "RCPT":     (R.NEED_MAIL,  R.NEED_MAIL, RCPT,           RCPT,           R.RCPT_AFTER_BDAT, _NO),
    "DATA":     (R.NEED_MAIL,  R.NEED_MAIL, R.NEED_RCPT,    DATA,           R.DATA_AFTER_BDAT, _NO),
    "BDAT":     (R.NEED_MAIL,  R.NEED_MAIL, R.NEED_RCPT,    CHUNK,          CHUNK,          _NO),
    "RSET":     (SAME,         READY,       READY,          READY,          READY,          _NO),
    "NOOP":     (SAME,         SAME,        SAME,           SAME,           SAME,           _NO),
    "VRFY":     (SAME,         SAME,        SAME,           SAME,           SAME,           _NO),
    "HELP":     (SAME,         SAME,        SAME,           SAME,           SAME,           _NO),
    "QUIT":     (CLOSED,       CLOSED,      CLOSED,         CLOSED,         CLOSED,         CLOSED),
    "STARTTLS": (TLS,          TLS,         _TXN,           _TXN,           _TXN,           _NO),
    "AUTH":     (R.NEED_HELO,  SAME,        _TXN,           _TXN,           _TXN,           _NO),
}

# (state, step) -> state: the engine's own moves.
STEPS = {
    (GREET, "end"): SAME, (READY, "end"): SAME,     # a transaction ends (reply to the text,
    (MAIL, "end"): READY, (RCPT, "end"): READY,     # RSET, HELO, a failed transfer)
    (DATA, "end"): READY, (CHUNK, "end"): READY,
    (READY, "sasl"): AUTH, (AUTH, "sasl done"): READY,
    (TLS, "handshake done"): GREET,                 # everything is forgotten: EHLO again
    (GREET, "refuse"): REFUSED, (REFUSED, "end"): SAME,   # a 554 greeting; BDAT skipped
    (ANY, "close"): CLOSED,
}

# How input is read in each state; a BDAT chunk's octets are read first in any state.
MODES = {GREET: "command", READY: "command", MAIL: "command", RCPT: "command",
         CHUNK: "command", REFUSED: "command", DATA: "data", AUTH: "sasl", TLS: "nothing", CLOSED: "nothing"}
