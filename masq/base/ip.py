"""IP address text checks that answer as the ipaddress module would, without importing it.

ipaddress costs `sendmail` ~2 ms and an idle daemon ~0.3 MB, and most configurations and
clients name plain IPv4: the common forms are recognised here, the rest handed to ipaddress
lazily.
"""


def is_ipv4(text):
    """Return True for dotted-quad IPv4 as ipaddress accepts it (checked without importing
    it: ipaddress costs `sendmail` ~2 ms, and most configurations name only IPv4)."""
    parts = text.split(".")
    return len(parts) == 4 and all(
        part.isascii() and part.isdigit() and len(part) <= 3 and (part == "0" or part[0] != "0")
        and int(part) <= 255 for part in parts)


def is_loopback(ip):
    """Return True if the text is a loopback IP address (a name is not one), as ipaddress
    says; the usual 127.x.y.z and ::1 without importing it (an idle daemon does not)."""
    if ip == "::1" or (is_ipv4(ip) and ip.startswith("127.")):
        return True
    import ipaddress
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False
