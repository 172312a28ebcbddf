"""blocklist-proxy: enforce a licensed URL blocklist at the network edge."""
