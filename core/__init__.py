"""LandFuse core package."""
