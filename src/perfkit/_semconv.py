"""
OpenTelemetry semantic-convention constants that modules without the metrics machinery need
(importing this loads nothing else).
"""

from __future__ import annotations

from typing import Final

__all__ = ["DB_DURATION_BUCKETS", "HTTP_DURATION_BUCKETS"]

# The semantic conventions' advised boundaries (seconds).
HTTP_DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
DB_DURATION_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
