import blocklist_addon


def test_package_imports() -> None:
    assert blocklist_addon.__doc__
