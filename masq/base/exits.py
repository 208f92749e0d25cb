"""The sysexits table: every exit status masq's command line uses, in one place.

Values from sysexits.h (BSD), which sendmail-compatible callers (cron, MUAs, scripts)
interpret: 75 means "try again later", 78 "fix the configuration".
"""

OK = 0
USAGE = 64        # EX_USAGE: bad command line
DATAERR = 65      # EX_DATAERR: bad input data
NOINPUT = 66      # EX_NOINPUT: an input file is missing or unreadable
NOUSER = 67       # EX_NOUSER: addressee unknown
UNAVAILABLE = 69  # EX_UNAVAILABLE: a service is unavailable
SOFTWARE = 70     # EX_SOFTWARE: internal error (a bug)
OSERR = 71        # EX_OSERR: system error (cannot fork, ...)
CANTCREAT = 73    # EX_CANTCREAT: cannot create an output file
IOERR = 74        # EX_IOERR: input/output error
TEMPFAIL = 75     # EX_TEMPFAIL: temporary failure, the caller should retry
NOPERM = 77       # EX_NOPERM: permission denied
CONFIG = 78       # EX_CONFIG: configuration error


class Failure(Exception):
    """An error that ends a command: one line for stderr and the exit status to use."""

    def __init__(self, message, status=TEMPFAIL):
        super().__init__(message)
        self.status = status
