"""``blocklist-proxy``: mitmdump with the blocklist addon loaded and operator-friendly defaults.

Everything it does can also be done with plain ``mitmdump -s <addon.py> --set ...``; this
command only saves typing and picks safe defaults: listen on 127.0.0.1:8080 in regular
mode, the embedded store, and ``flow_detail=0`` so that mitmdump does not print every
requested URL (listed ones included) to its log.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import pathlib
import sys
from collections.abc import Sequence

from blocklist_addon.lists.store.base import URL_FORMS

__all__ = ["build_args", "main"]

#: The addon script, found without importing it (importing would build its addons).
_SPEC = importlib.util.find_spec("blocklist_addon.addon")
assert _SPEC is not None and _SPEC.origin is not None
ADDON = pathlib.Path(_SPEC.origin).resolve()

EPILOG = """\
Any other arguments go to mitmdump unchanged (see `mitmdump --help`), e.g. --set
blocklist_intercept=never, --set confdir=/etc/blocklist-proxy/mitmproxy, --set flow_detail=1.
Every blocklist setting is a mitmproxy option: `mitmdump -s {addon} --options | grep blocklist_`
lists them with their help.

Modes: regular (explicit proxy, browsers configured by PAC/WPAD), transparent (a gateway
redirecting ports 80/443; see deploy/), reverse:https://site.example (in front of a site).
In transparent mode block_global defaults to false (subscribers have public addresses; the
gateway's firewall guards the port).

Exit status: 0 after a clean shutdown, 1 when it cannot start (no list to enforce, a port in
use, a bad option); the reason is on stderr.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blocklist-proxy",
        description="Run mitmproxy (mitmdump) enforcing the blocklist: listed URLs get the "
        "451 splash page, everything else passes unchanged.",
        epilog=EPILOG.format(addon=ADDON),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML file of options, as mitmproxy's config.yaml (blocklist_store: ..., "
        "listen_port: ...). Put a Redis password there or in $BLOCKLIST_REDIS_PASSWORD_FILE, "
        "never on the command line.",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        help=f"{URL_FORMS}. "
        "Default: the embedded store in the data directory: $BLOCKLIST_DATA_DIR, else "
        "/var/lib/blocklist-proxy when it exists, else ~/.local/share/blocklist-proxy.",
    )
    parser.add_argument(
        "--listen-host", metavar="H", help=f"address to listen on ({DEFAULTS['listen_host']})"
    )
    parser.add_argument(
        "--listen-port", metavar="P", type=int, help=f"port ({DEFAULTS['listen_port']})"
    )
    parser.add_argument(
        "--mode",
        metavar="MODE",
        action="append",
        help="mitmproxy mode, repeatable (regular; transparent; reverse:https://site.example)",
    )
    return parser


#: Defaults, overridden by --config, then by the command line.
DEFAULTS: dict[str, str | list[str]] = {
    "flow_detail": "0",
    "listen_host": "127.0.0.1",
    "listen_port": "8080",
    "mode": ["regular"],
}


def build_args(argv: Sequence[str]) -> list[str]:
    """The mitmdump arguments for a ``blocklist-proxy`` command line.

    Every setting becomes one ``--set`` (mitmproxy refuses a second value for a scalar
    option), merged in the order defaults, --config, flags, ``--set`` given by the user.
    """
    options, passthrough = _options(argv)
    out = ["-s", str(ADDON)]
    for key, value in options.items():
        for item in value if isinstance(value, list) else [value]:
            out += ["--set", f"{key}={item}"]
    return out + passthrough


def _options(argv: Sequence[str]) -> tuple[dict[str, str | list[str]], list[str]]:
    """The merged settings of a command line, and the arguments passed on as they are."""
    args, rest = _parser().parse_known_args(argv)
    options = dict(DEFAULTS)
    if args.config:
        options.update(_config_options(args.config))
    flags = {
        "listen_host": args.listen_host,
        "listen_port": args.listen_port,
        "mode": args.mode,
        "blocklist_store": args.store,
    }
    options.update({key: value for key, value in flags.items() if value is not None})
    if _transparent(options["mode"]):
        # Behind a gateway the clients are subscribers with public addresses, which
        # mitmproxy's block_global (meant for a proxy open to the internet) would kill
        # without a word: every diverted connection black-holed. The gateway's firewall
        # decides who reaches the port (deploy/nftables-divert.nft).
        options.setdefault("block_global", "false")
    passthrough: list[str] = []
    user_sets: dict[str, list[str]] = {}
    items = iter(rest)
    for arg in items:
        if arg == "--set" or arg.startswith("--set="):
            setting = arg.removeprefix("--set=") if arg != "--set" else next(items, "")
            key, _, value = setting.partition("=")
            user_sets.setdefault(key, []).append(value)
        else:
            passthrough.append(arg)
    options.update({k: v if len(v) > 1 else v[0] for k, v in user_sets.items()})
    return options, passthrough


def make_ca(options: dict[str, str | list[str]]) -> pathlib.Path | None:
    """Make the proxy's CA in its confdir, named after the operator, unless there is one.

    mitmproxy would make it on first start named ``mitmproxy``, which is what every device's
    trust store and certificate viewer would then show: a school's pupils and staff should
    see who runs the filter. An existing CA (the operator's own, or one made before) is
    never replaced. The path of the CA certificate, or None when nothing was made."""
    from mitmproxy import certs

    operator = str(options.get("blocklist_operator") or "").strip()
    if not operator:
        return None
    confdir = pathlib.Path(str(options.get("confdir") or "~/.mitmproxy")).expanduser()
    if (confdir / "mitmproxy-ca.pem").exists():
        return None
    key_size = int(str(options.get("key_size") or 2048))
    certs.CertStore.create_store(
        confdir, "mitmproxy", key_size, organization=operator, cn=f"{operator} web filter CA"
    )
    return confdir / "mitmproxy-ca-cert.pem"


def _transparent(modes: str | list[str]) -> bool:
    return any(
        m.split(":", 1)[0] == "transparent" for m in ([modes] if isinstance(modes, str) else modes)
    )


def _config_options(path: str) -> dict[str, str | list[str]]:
    from mitmproxy import optmanager
    from mitmproxy.exceptions import OptionsError

    try:
        text = pathlib.Path(path).read_text()
        loaded = optmanager.parse(text) or {}
    except OSError as exc:
        raise SystemExit(f"blocklist-proxy: cannot read --config {path}: {exc.strerror}") from None
    except OptionsError as exc:
        raise SystemExit(f"blocklist-proxy: --config {path}: {exc}") from None
    return {key: _text(value) for key, value in loaded.items()}


def _text(value: object) -> str | list[str]:
    if isinstance(value, list):
        return [str(_text(v)) for v in value]
    return str(value).lower() if isinstance(value, bool) else str(value)


def main(argv: Sequence[str] | None = None) -> int | None:
    from mitmproxy.tools.main import mitmdump

    # Under systemd (the journal) or with output to a file, stdout is no terminal and Python
    # would hold the log back in 8 KB blocks, for minutes: one line at a time instead.
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    argv = sys.argv[1:] if argv is None else argv
    try:
        made = make_ca(_options(argv)[0])
    except (OSError, ValueError) as exc:
        raise SystemExit(f"blocklist-proxy: cannot make the proxy's CA: {exc}") from None
    if made is not None:
        print(f"blocklist-proxy: made the proxy's CA, named after the operator: {made}")
    return mitmdump(build_args(argv))


if __name__ == "__main__":
    sys.exit(main())
