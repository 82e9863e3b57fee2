"""The asyncio implementation. ``offload_registry._sync`` is generated from this package by
``scripts/unasync.py``; edit the code here, then run that script."""
