"""The blocklist addon for mitmproxy: ``mitmdump -s blocklist_addon/addon.py --set blocklist_...``.

``blocklist-proxy`` loads this same module. One small addon per concern, wired here:

- ``ActiveList``: the list in force (store, reloads, last-known-good copy);
- ``BlockLog``: one JSON line per block;
- ``Enforcer``: the URL check at request headers and the 451 splash page;
- ``InterceptPolicy``: which TLS connections to decrypt, which to refuse;
- ``StatusServer``: /metrics and /healthz.
"""

from blocklist_addon.active import ActiveList
from blocklist_addon.blocklog import BlockLog
from blocklist_addon.enforce import Enforcer
from blocklist_addon.intercept import InterceptPolicy
from blocklist_addon.metrics import Metrics
from blocklist_addon.status import StatusServer


def make_addons() -> list[object]:
    metrics = Metrics()
    lists = ActiveList(metrics)
    blocklog = BlockLog()
    enforcer = Enforcer(lists, metrics, blocklog)
    return [
        lists,
        blocklog,
        enforcer,
        InterceptPolicy(lists, metrics, blocklog, enforcer),
        StatusServer(lists, metrics),
    ]


addons = make_addons()
