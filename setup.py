"""The one compiled part of the package: the PDQ index's two loops (plain C, built with the
compiler ``pdqhash`` already needs). Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "blocklist_addon.hashes._mih",
            ["blocklist_addon/hashes/_mih.c"],
            extra_compile_args=["-O2"],
        )
    ]
)
