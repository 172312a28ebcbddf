"""The compiled parts of the package, plain C built with the compiler ``pdqhash`` already
needs: the PDQ index's two loops, the URL matcher's lookups (SHA-256 of host suffixes
and expressions, the host index and the directory walk; the Python matcher is their
reference) and the embedded-URL search's prefilter (markers.PLAIN is its reference).
Everything else is in pyproject.toml."""

import sys

# pip does not check requires-python for a local directory before resolving dependencies:
# on Python 3.11 (Debian 12) it only said "No matching distribution found for mitmproxy".
if sys.version_info < (3, 12):  # noqa: UP036  (the point: older Pythons run this file)
    sys.exit(
        "blocklist-proxy needs Python 3.12 or newer (this is "
        f"{sys.version_info.major}.{sys.version_info.minor}): use Debian 13, Ubuntu 24.04 "
        "or the container (deploy/compose/), see docs/operators-guide.md"
    )

from setuptools import Extension, setup  # after the check: any Python runs it

setup(
    ext_modules=[
        Extension(
            "blocklist_addon.hashes._mih",
            ["blocklist_addon/hashes/_mih.c"],
            extra_compile_args=["-O2"],
        ),
        Extension(
            "blocklist_addon.urls._lookup",
            ["blocklist_addon/urls/_lookup.c"],
            extra_compile_args=["-O2"],
        ),
        Extension(
            "blocklist_addon.urls.embedded._plain",
            ["blocklist_addon/urls/embedded/_plain.c"],
            extra_compile_args=["-O2"],
        ),
    ]
)
