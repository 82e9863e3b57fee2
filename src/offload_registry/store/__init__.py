"""Shared tiers behind the registry: key names, URL schemes, and (later) the Redis backends."""
