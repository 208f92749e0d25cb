"""The outgoing copy of a message for a route with rewrites: sender and From:/Sender:.

The queued message is never changed (masqmail's rule): the rewritten header block is made
when the message leaves, and the rest of the text streams through untouched. Only local
addresses (unqualified, or in a local domain) are rewritten; see masq.route.
"""

from masq import route as routes


def _rewrite_value(value, rewrite):
    """Return a header value with each address in it rewritten."""
    from masq.mail import address
    try:
        found = address.parse_address_list(value)
    except address.AddressError:
        return value
    for addr in found:
        new = rewrite(addr)
        if new != addr:
            value = value.replace(addr, new)
    return value


def outgoing(route, sender, open_chunks, is_local):
    """Return (sender, open_body) for the message as it leaves by route."""
    new_sender = routes.rewrite_sender(route, sender, is_local)

    def body():
        from masq.mail import message      # at the first delivery: an idle daemon has none
        headers, rest, source = message.split_message(open_chunks())
        for name in ("From", "Sender"):
            value = headers.get(name)
            if value is not None:
                new = _rewrite_value(value, lambda a: routes.rewrite_header_address(
                    route, a, is_local))
                if new != value:
                    headers.replace(name, new)
        yield headers.to_bytes() + b"\r\n" + rest
        yield from source
    return new_sender, body
