"""Durations and areas as people read them: one formatter each for every surface.

Standard library only.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["format_duration", "format_hectares", "format_time_left"]


def format_duration(seconds: float, spaced: bool = False) -> str:
    """``65`` → ``"1m05s"`` (or ``"1 min 05 s"`` when ``spaced``); hours drop the seconds."""
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if spaced:
        if hours:
            return f"{hours} h {minutes:02d} min"
        return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def format_time_left(seconds: Optional[float]) -> str:
    """``"about 2 min 05 s left"``; ``""`` when unknown (None, NaN or negative)."""
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    return f"about {format_duration(seconds, spaced=True)} left"


def format_hectares(value: Optional[float]) -> str:
    """``1234.5`` → ``"1,234 ha"``, ``12.345`` → ``"12.35 ha"``; ``"n/a"`` for None."""
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:,.0f} ha"
    return f"{value:,.2f} ha"
