"""Operator tools over a whole data root and its Redis copies, one module per job.

``discover`` lists the sessions on disk, ``tier`` opens the deployment's Redis for a tool,
and ``warm``, ``verify``, ``stats`` and ``evict`` are the jobs the CLI commands of the same
names run. AsyncIO only (the CLI runs them with ``asyncio.run``): they pipeline many
sessions per round trip and parse journals in a worker thread meanwhile.
"""
