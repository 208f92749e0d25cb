"""SMTP replies: a code, an enhanced status code (RFC 3463) and text.

Shared by the server and client engines. A `Reply` renders itself to wire bytes; text is
sanitised so that a reply can never carry a CR or LF of its own (hostile input echoed back
must not inject lines).
"""


class Reply:
    """One SMTP reply: `Reply(550, "5.1.1", "User unknown")`."""

    __slots__ = ("code", "enhanced", "text")

    def __init__(self, code, enhanced, text):
        self.code = int(code)
        self.enhanced = enhanced or ""
        if isinstance(text, (list, tuple)):
            self.text = tuple(_clean(line) for line in text) or ("",)
        else:
            self.text = (_clean(text),)

    @property
    def lines(self):
        """Return the text lines of the reply (one or more)."""
        return self.text

    def is_positive(self):
        """Return True for a 2xx or 3xx reply."""
        return self.code < 400

    def is_transient(self):
        """Return True for a 4xx reply."""
        return 400 <= self.code < 500

    def is_permanent(self):
        """Return True for a 5xx reply."""
        return self.code >= 500

    def to_bytes(self):
        """Return the reply as it goes on the wire, CRLF-terminated, multi-line if needed."""
        out = []
        last = len(self.text) - 1
        for i, line in enumerate(self.text):
            sep = " " if i == last else "-"
            prefix = "%d%s" % (self.code, sep)
            if self.enhanced:
                prefix += self.enhanced + (" " if line else "")
            out.append(prefix + line)
        return ("\r\n".join(out) + "\r\n").encode("utf-8", "replace")

    def __str__(self):
        return " ".join(filter(None, (str(self.code), self.enhanced, " ".join(self.text))))

    def __repr__(self):
        return "Reply(%d, %r, %r)" % (self.code, self.enhanced, self.text)

    def __eq__(self, other):
        return isinstance(other, Reply) and (self.code, self.enhanced, self.text) == (
            other.code, other.enhanced, other.text)

    def __hash__(self):
        return hash((self.code, self.enhanced, self.text))


def _clean(text):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "".join(c if c >= " " and c != "\x7f" else "?" for c in str(text))

