"""The outgoing copy of a message for a route with rewrites: the sender and address headers.

The queued message is never changed (masqmail's rule): the rewritten header block is made
when the message leaves, and the rest of the text streams through untouched. Which
address each table gives is masq.route's (local addresses only); the header fields are
From:, Sender:, Reply-To: and Mail-Followup-To:, each rewritten in its raw form by
masq.mail.addrmap (display names, comments, groups and folding kept). A field whose
address list does not parse leaves as it came.
"""

from masq import route as routes


def outgoing(route, sender, open_chunks, is_local):
    """Return (sender, open_body) for the message as it leaves by route."""
    new_sender = routes.rewrite_sender(route, sender, is_local)

    def body():
        from masq.mail import addrmap, message  # at the first delivery: an idle daemon has none
        headers, rest, source = message.split_message(open_chunks())
        for name in routes.HEADER_FIELDS:
            headers.rewrite(name, lambda value, field=name: addrmap.rewrite_value(
                value, lambda found: routes.rewrite_header_address(
                    route, field, found.text, is_local)))
        yield headers.to_bytes() + b"\r\n" + rest
        yield from source
    return new_sender, body
