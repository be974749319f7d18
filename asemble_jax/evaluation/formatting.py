"""How an estimate with its interval reads in the Markdown of every evaluation report."""
from __future__ import annotations

from collections.abc import Mapping


def format_interval(block: Mapping[str, float], digits: int = 3) -> str:
    """"0.725 (0.622 to 0.822)" from a block with "estimate", "ci_low" and "ci_high" (as the reports' JSON stores
    them). "to" rather than a dash, so that an interval of differences, "-0.100 (-0.200 to 0.050)", cannot be
    misread."""
    return f"{block['estimate']:.{digits}f} ({block['ci_low']:.{digits}f} to {block['ci_high']:.{digits}f})"
