// proxy.pac: browsers in a school or office send web traffic through blocklist-proxy.
//
// Serve this file over HTTP as application/x-ns-proxy-autoconfig, then either
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
// Adapt PROXIES (one entry per blocklist-proxy instance; several give failover) and LOCAL.
// tests/test_browser.py runs this file in Chromium with PROXIES pointed at a test proxy.

var PROXIES = "PROXY proxy.school.example:8081; PROXY proxy.school.example:8082";

function FindProxyForURL(url, host) {
  host = host.toLowerCase();

  // Local names never go through the proxy. Name tests only: no DNS lookup per request.
  if (isPlainHostName(host) ||
      dnsDomainIs(host, ".local") ||
      dnsDomainIs(host, ".school.example")) {      // LOCAL: your own domain(s)
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
  return PROXIES;
}
