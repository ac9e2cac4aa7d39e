"""scheduler, list-schedules, export-systemd, export-cron (being built)."""
