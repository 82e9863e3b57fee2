"""The blocking implementation, generated from ``offload_registry._async`` by
``scripts/unasync.py`` (except ``_primitives.py``, which is written by hand). Do not edit the
generated files."""
