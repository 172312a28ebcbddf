"""The test lab: real processes, servers, networks and pictures that tests/ and bench/ build
on, imported as ``testlab.<module>`` (no ``sys.path`` edits).

``harness`` (proxies, origins, a throwaway CA), ``netns`` (network namespaces and veth pairs),
``divert_lab`` and ``bgp_lab`` (gateways, BIRD and ExaBGP inside them), ``dnsserver`` (a small
DNS server), ``images`` (pictures drawn with Pillow, never real content), ``adversarial``
(hostile URL shapes), and the mitmproxy addons the tests load into a proxy by path
(``loopback_addon``: upstreams routed to local origins; ``fault_addon``: injected failures).
"""
