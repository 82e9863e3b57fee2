"""Everything below the data root: the safe-open layer, journals, session and agent files.

Each module here owns one kind of file; :mod:`offload_registry.disk.layout` names them all.
"""
