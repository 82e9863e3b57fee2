"""What the shared Redis tier is made of, apart from the code that awaits (``_async/``):
key names (``keyspace``), URLs and options (``urls``), the values it reads parsed
(``records``), its start-up checks (``startup``), what a failed first call means
(``diagnose``), the circuit breaker, the heartbeat and the in-process ``memory://`` server."""
