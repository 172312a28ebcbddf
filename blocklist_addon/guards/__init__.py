"""The mitmproxy concerns, one class a module, mitmproxy style: the URL check (urls),
which TLS to decrypt (tls), pages (pages), posts (uploads) and images (images).

They may use lists/, urls/, content/, hashes/ and ops/; nothing below imports them.
"""
