"""URLs: canonical form, the compiled list and matching, URLs inside URLs.

Pure: no mitmproxy, no store, no network.
"""
