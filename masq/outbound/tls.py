"""Client TLS contexts for outgoing SMTP: verification on by default, TLS 1.2 at least.

Owns: building (and caching) the `ssl.SSLContext` a route's settings call for, finding the
CA certificates (the route's `tls_ca` file or directory, else the system default, else the
usual bundle files of OpenWrt and Debian), and turning handshake errors into one clear line.
Does not: run handshakes (net.Stream does, through MemoryBIO) or decide about fallbacks.

`ssl` is imported only here and only when a context is needed: on a router without
python3-openssl, routes with tls 'none' still work and the others defer with a clear text.
Failures are returned, never raised: `context()` gives (context, None) or (None, text).
"""

import os

# Bundles tried when the system default paths hold no CA certificate.
BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/cert.pem",
           "/etc/pki/tls/certs/ca-bundle.crt")

_cache = {}


def context(verify=True, ca=None):
    """Return (SSLContext, None) for these settings, or (None, why it cannot be built)."""
    key = (bool(verify), ca or None)
    if key not in _cache:
        _cache[key] = _build(*key)
    return _cache[key]


def _build(verify, ca):
    try:
        import ssl
    except ImportError:
        return None, "TLS is not available (install python3-openssl)"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx, None
    try:
        if ca:
            if os.path.isdir(ca):
                ctx.load_verify_locations(capath=ca)
            else:
                ctx.load_verify_locations(cafile=ca)
        else:
            _load_default(ctx)
    except (OSError, ssl.SSLError) as exc:
        return None, "cannot load the CA certificates %s: %s" % (ca or "", _reason(exc))
    return ctx, None


def _load_default(ctx):
    ctx.set_default_verify_paths()
    if ctx.cert_store_stats().get("x509_ca"):
        return
    for bundle in BUNDLES:
        if os.path.isfile(bundle):
            ctx.load_verify_locations(cafile=bundle)
            return


def _reason(exc):
    return getattr(exc, "verify_message", None) or getattr(exc, "reason", None) \
        or getattr(exc, "strerror", None) or str(exc)


def describe_failure(error, host, verify=True):
    """Return one log line for a failed handshake with host (error: the handshake's text)."""
    text = str(error)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text \
            or "hostname mismatch" in text.lower():
        hint = "set tls_ca to the CA that signed it, or tls_verify '0' to accept any"
        return "TLS certificate of %s not trusted (%s); %s" % (host, text, hint)
    return "TLS handshake with %s failed: %s" % (host, text)


def clear_cache():
    """Forget the built contexts (after the configuration or CA files change)."""
    _cache.clear()
