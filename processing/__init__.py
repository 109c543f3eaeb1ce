"""LandFuse processing package."""
