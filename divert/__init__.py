"""Two-stage diversion (DESIGN "Two-stage diversion (ISP scale)"): the listed hosts'
addresses, so that a gateway or router sends only traffic to them through the proxy.

One-way flow: the sync stores the active list's hostnames encrypted (``hosts``); ``resolve``
decrypts them in memory, resolves them (``dns``), passes the answers through the sanity
gates (``gates``, ``protect``) and publishes a versioned diversion set (``dataset``) in the
store namespace ``divert``; the data planes render that set (``export``) and ``run`` keeps
one of them current (``planes``: ``nft`` sets on a gateway, BGP routes through ``bird`` or
``exabgp``), withdrawing it while the proxy is ill.
"""

from __future__ import annotations


class DivertError(Exception):
    """One line an operator can act on; the command exits 1 with it. Never holds a hostname."""
