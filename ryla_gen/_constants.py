"""Default numbers, in one place."""

from __future__ import annotations

__all__ = [
    "DEFAULT_COMFYUI_URL",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_JOB_TIMEOUT",
    "DEFAULT_LONG_POLL",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_RUNPOD_BASE_URL",
    "INITIAL_RETRY_DELAY",
    "MAX_POLL_INTERVAL",
    "MAX_RETRY_DELAY",
]

DEFAULT_COMFYUI_URL = "http://127.0.0.1:8188"
"""Where a local ComfyUI listens by default (what `ryla-gen comfyui serve` starts)."""

DEFAULT_RUNPOD_BASE_URL = "https://api.runpod.ai/v2"

DEFAULT_JOB_TIMEOUT = 600.0
"""Seconds one generate()/wait() call may take in all, queue time included."""

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_REQUEST_TIMEOUT = 60.0
"""Seconds one HTTP request may take (reading a large image included)."""

DEFAULT_MAX_RETRIES = 4
"""Retries of one safe request after the first try (so 5 tries in all)."""

INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0

DEFAULT_POLL_INTERVAL = 1.0
"""Seconds between status polls when no push channel (websocket) is available."""
MAX_POLL_INTERVAL = 5.0

DEFAULT_LONG_POLL = 20.0
"""Seconds the ryla-gen job API may hold one status request open (0: plain polling)."""
