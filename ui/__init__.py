"""LandFuse ui package."""
