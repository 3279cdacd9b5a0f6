"""
The example bill/vote API served by ``make demo``.
"""

from bill_api.app import create_app

__all__ = ["create_app"]
