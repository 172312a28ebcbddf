"""The list in force: following the store, the last-known-good copy."""
