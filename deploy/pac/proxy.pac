// proxy.pac: browsers in a school or office send web traffic through blocklist-proxy.
//
// Serve this file over HTTP as application/x-ns-proxy-autoconfig (configure that content
// type on the web server, for proxy.pac and wpad.dat alike), then either
//  - point managed browsers at it (Chrome/Edge policy ProxyPacUrl, Firefox policy
//    Proxy.AutoConfigURL, Windows GPO "Use automatic configuration script", macOS/iOS MDM
//    "Proxy: Automatic"), or
//  - let them find it by WPAD: DHCP option 252 with the file's URL, and/or DNS: a host
//    named "wpad" in the local domain serving it at http://wpad.<domain>/wpad.dat (same
//    file, same content type). Chrome and Firefox only use WPAD where "auto-detect proxy
//    settings" is on; managed policy is the dependable way.
// Devices also need the proxy's CA (mitmproxy-ca-cert.pem in the proxy's confdir) installed as
// trusted where blocklist_intercept=listed, so that listed HTTPS pages show the splash page.
//
// Adapt PROXIES (one entry per blocklist-proxy instance, e.g. one per core) and LOCAL.
// Hosts are spread over the instances by a hash of the host name: a browser tries a PAC's
// list in order (it is failover, not load balancing), so each host gets its own first
// instance and the others, in a fixed order, as failover. One host always goes to the same
// instance first, which keeps its connections and TLS decisions in one place.
// tests/test_browser.py runs this file in Chromium with PROXIES pointed at a test proxy;
// tests/test_deploy.py evaluates it over many hosts.

var PROXIES = ["proxy.school.example:8081", "proxy.school.example:8082"];

// The proxies for host, its own first instance leading.
function proxiesFor(host) {
  var hash = 0;
  for (var i = 0; i < host.length; i++) {
    hash = (hash * 31 + host.charCodeAt(i)) % 1000003;
  }
  var first = hash % PROXIES.length;
  var list = [];
  for (var j = 0; j < PROXIES.length; j++) {
    list.push("PROXY " + PROXIES[(first + j) % PROXIES.length]);
  }
  return list.join("; ");
}

function FindProxyForURL(url, host) {
  host = host.toLowerCase();

  // Local names never go through the proxy. Name tests only: no DNS lookup per request.
  if (isPlainHostName(host) ||
      dnsDomainIs(host, ".local") ||
      host === "school.example" ||                 // LOCAL: your own domain(s), the bare
      dnsDomainIs(host, ".school.example")) {      // name too (dnsDomainIs needs the dot)
    return "DIRECT";
  }

  // Neither do private, loopback or link-local addresses written as such. isInNet only for
  // an address literal: on a name it would resolve it first, on every request.
  if (/^\d+\.\d+\.\d+\.\d+$/.test(host) &&
      (isInNet(host, "10.0.0.0", "255.0.0.0") ||
       isInNet(host, "172.16.0.0", "255.240.0.0") ||
       isInNet(host, "192.168.0.0", "255.255.0.0") ||
       isInNet(host, "169.254.0.0", "255.255.0.0") ||
       isInNet(host, "127.0.0.0", "255.0.0.0"))) {
    return "DIRECT";
  }

  // Everything else, HTTP and HTTPS alike. No "; DIRECT" at the end: if every proxy is down,
  // browsing stops rather than silently going around the filter (add it only if your policy
  // prefers availability).
  return proxiesFor(host);
}
