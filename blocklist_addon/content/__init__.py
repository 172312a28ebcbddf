"""Parsers of bodies: listed links in pages, URLs and files in posts, multipart, codings.

Pure: bytes in, findings out; no mitmproxy.
"""
