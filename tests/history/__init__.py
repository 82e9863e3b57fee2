"""Jepsen-style histories of many worker processes sharing sessions, and their checker.

* ``record``: the history format (one JSON line per attempt and per outcome, fsynced), its
  writer and its reader.
* ``faults``: a hook that SIGKILLs the process right after a named function returns.
* ``worker``: one worker process (``python -m history.worker CONFIG``): seeded random traffic,
  every call recorded.
* ``run``: the controller: starts the workers, restarts Redis and kills workers at random
  points, then reads the final state (journals, claims records, fresh registries, ``inspect``).
* ``checker``: pure functions from histories and the final state to violations.
"""
