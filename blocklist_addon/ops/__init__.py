"""What operators see and touch: block log, webhook, metrics, status page, systemd
notices, error wording, the splash page, option checks.
"""
