"""Apache Kafka in KRaft mode, run from the jars that `make kafka-jars` copies into
deploy/kafka-libs: one node (broker and controller in one JVM), or a cluster of N such nodes that
vote in one controller quorum (`shop infra up --brokers 3`). Logs survive restarts: storage is
formatted once and the cluster id is kept beside it.

A single node keeps its files in the Kafka folder itself (`.var/kafka`); node i of a larger cluster
in `node-i` under it, on the client port base + 2(i-1) and the controller port next to it.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import shutil
import socket
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient

from deploy.local.common import (
    DEFAULT_DATA_DIR,
    REPO_ROOT,
    InfraError,
    ServiceStatus,
    ensure_port_free,
    file_size,
    process_matches,
    read_pid,
    run_sync,
    tail,
    terminate,
    wait_for,
)
from events.topics import replication_for

if TYPE_CHECKING:
    from deploy.local.kafka_security import BrokerSecurity

DEFAULT_PORT = 9092
DEFAULT_LIBS_DIR = REPO_ROOT / "deploy" / "kafka-libs"
MAIN_CLASS = "kafka.Kafka"
NODE_ID = 1

LOG4J2 = """\
status = warn
name = shop-kafka
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {logs}/server.log
appender.file.filePattern = {logs}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 10MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
"""


def new_cluster_id() -> str:
    """A cluster id in Kafka's own format: a random UUID, base64url without padding."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


async def metadata_ok(
    bootstrap: str, timeout_ms: int = 3000, client: Mapping[str, Any] | None = None
) -> bool:
    """A real metadata request: the broker answers and lists its topics."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, **(client or {})
    )
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        await admin.close()


def broker_ready(bootstrap: str, client: Mapping[str, Any] | None = None) -> bool:
    host, _, port = bootstrap.rpartition(":")
    # The TCP check first keeps aiokafka from logging connection errors while the JVM boots.
    return tcp_open(host, int(port)) and run_sync(metadata_ok(bootstrap, client=client))


@dataclass
class KafkaBroker:
    """One local broker whose files all live under data_dir."""

    data_dir: Path = DEFAULT_DATA_DIR / "kafka"
    port: int = DEFAULT_PORT
    controller_port: int | None = None
    host: str = "127.0.0.1"
    libs_dir: Path = DEFAULT_LIBS_DIR
    heap: str = "512m"
    # The port clients are told to use (a fault proxy in front of the broker); None: port.
    advertised_port: int | None = None
    node_id: int = NODE_ID
    # controller.quorum.voters of the whole cluster; None: this node alone.
    voters: str | None = None
    # Nodes in the cluster: sets the replication of internal topics and the default min ISR.
    cluster_size: int = 1
    name: str = "kafka"
    # SASL/SCRAM users and ACLs (deploy/local/kafka_security.py); None: PLAINTEXT, no authorizer.
    security: BrokerSecurity | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log_start: int = field(default=0, init=False, repr=False)

    @property
    def cport(self) -> int:
        return self.controller_port if self.controller_port is not None else self.port + 1

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "data"

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs / "server.log"

    @property
    def console_log(self) -> Path:
        return self.logs / "console.log"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "broker.json"

    def config(self) -> dict[str, str]:
        listeners = f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.cport}"
        rf, min_isr = (str(n) for n in replication_for(self.cluster_size))
        config = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters or f"{self.node_id}@{self.host}:{self.cport}",
            "controller.listener.names": "CONTROLLER",
            "listeners": listeners,
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.advertised_port or self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.log_dirs),
            "num.partitions": "1",
            # One node: 1 everywhere (else transactions hang). Three or more: RF 3, min ISR 2.
            "default.replication.factor": rf,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": rf,
            # Fewer internal partitions than the default 50: a few nodes, two cores.
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": min_isr,
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
        }
        if self.security is not None:
            return self.security.broker_config(config, self.data_dir)
        return config

    @property
    def client(self) -> dict[str, Any]:
        """Options for this process's own (admin) clients of the broker."""
        return self.security.client_options() if self.security else {}

    # -- lifecycle -------------------------------------------------------------------------

    def running_pid(self) -> int | None:
        pid = read_pid(self.data_dir / "kafka.pid")
        if pid is not None and process_matches(pid, str(self.config_file)):
            return pid
        return None

    def start(self, timeout: float = 120) -> None:
        """Start the broker (or find it running) and wait until it answers a metadata request."""
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Spawn the broker detached from this process; does not wait for it to be ready."""
        if (pid := self.running_pid()) is not None:
            running = self._recorded_bootstrap()
            if running != self.bootstrap:
                raise InfraError(
                    f"Kafka from {self.data_dir} is already running on {running} (pid {pid}), "
                    f"not {self.bootstrap}; stop it first"
                )
            return
        java = shutil.which("java")
        if java is None:
            raise InfraError("java is not on PATH: install a JDK 17+ (apt-get install default-jdk)")
        self._check_jars()
        ensure_port_free(self.host, self.port, "Kafka")
        ensure_port_free(self.host, self.cport, "Kafka controller")

        self.logs.mkdir(parents=True, exist_ok=True)
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(LOG4J2.format(logs=self.logs))
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in self.config().items()))
        self.config_file.chmod(0o600)  # a secured broker's file holds its admin password
        classpath = [f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{self.libs_dir}/*"]
        if not (self.log_dirs / "meta.properties").exists():
            self._format([java, *classpath])

        self._log_start = file_size(self.server_log)
        jvm = [f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError"]
        with self.console_log.open("wb") as out:
            self._proc = subprocess.Popen(
                [java, *jvm, *classpath, MAIN_CLASS, str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        (self.data_dir / "kafka.pid").write_text(f"{self._proc.pid}\n")
        self.state_file.write_text(
            json.dumps({"host": self.host, "port": self.port, "controller_port": self.cport})
        )

    def wait_ready(self, timeout: float = 120) -> None:
        def ready() -> bool:
            if self.running_pid() is None:
                output = tail(self.console_log) or tail(self.server_log, since=self._log_start)
                raise InfraError(
                    f"Kafka exited during start (log: {self.server_log}); its last lines:\n{output}"
                )
            return broker_ready(self.bootstrap, self.client)

        what = f"Kafka answering on {self.bootstrap} (log: {self.server_log})"
        wait_for(ready, timeout=timeout, what=what)

    def stop(self, timeout: float = 60) -> bool:
        """Stop the broker: SIGTERM, then SIGKILL after timeout. False if it was not running."""
        pid = self.running_pid()
        if pid is not None:
            terminate(pid, timeout=timeout)
        if self._proc is not None:
            self._proc.poll()
            self._proc = None
        (self.data_dir / "kafka.pid").unlink(missing_ok=True)
        return pid is not None

    def status(self) -> ServiceStatus:
        address = self._recorded_bootstrap()
        pid = self.running_pid()
        if pid is None:
            return ServiceStatus(self.name, address, None, healthy=False, detail="not running")
        healthy = broker_ready(address, self.client)
        detail = "answers metadata requests" if healthy else "running but not answering"
        return ServiceStatus(self.name, address, pid, healthy=healthy, detail=detail)

    # -- helpers -----------------------------------------------------------------------------

    def _recorded_bootstrap(self) -> str:
        try:
            state = json.loads(self.state_file.read_text())
            return f"{state['host']}:{state['port']}"
        except (FileNotFoundError, ValueError, KeyError):
            return self.bootstrap

    def _check_jars(self) -> None:
        if any(self.libs_dir.glob("kafka_2.13-*.jar")):
            return
        if shutil.which("mvn") is None:
            raise InfraError(
                f"Kafka jars are missing from {self.libs_dir} and mvn is not on PATH: "
                "install Maven (apt-get install maven), then run `make kafka-jars`"
            )
        raise InfraError(f"Kafka jars are missing from {self.libs_dir}: run `make kafka-jars`")

    def _format(self, jvm: list[str]) -> None:
        id_file = self.data_dir / "cluster.id"
        if not id_file.exists():
            id_file.write_text(new_cluster_id() + "\n")
        cluster_id = id_file.read_text().strip()
        self.log_dirs.mkdir(parents=True, exist_ok=True)
        cmd = [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id]
        if self.security is not None:
            cmd += self.security.format_args()
        try:
            done = subprocess.run(
                [*cmd, "-c", str(self.config_file)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise InfraError("formatting Kafka storage took over 120s") from None
        if done.returncode != 0:
            output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
            raise InfraError(f"formatting Kafka storage in {self.log_dirs} failed:\n{output}")


CLUSTER_HEAP = "384m"


@dataclass
class KafkaCluster:
    """N local KRaft nodes (each broker and controller) forming one cluster; N = 1 is the single
    node of KafkaBroker, in data_dir itself. Node i listens on port + 2(i-1), its controller on
    controller port + 2(i-1); all of them vote in the controller quorum."""

    data_dir: Path = DEFAULT_DATA_DIR / "kafka"
    brokers: int = 1
    port: int = DEFAULT_PORT
    controller_port: int | None = None
    host: str = "127.0.0.1"
    libs_dir: Path = DEFAULT_LIBS_DIR
    heap: str | None = None  # 512m for one node, CLUSTER_HEAP each for more
    nodes: list[KafkaBroker] = field(init=False)

    def __post_init__(self) -> None:
        if self.brokers < 1:
            raise InfraError("a Kafka cluster has at least one broker")
        cport = self.controller_port if self.controller_port is not None else self.port + 1
        heap = self.heap or ("512m" if self.brokers == 1 else CLUSTER_HEAP)
        ids = range(1, self.brokers + 1)
        step = {i: 2 * (i - 1) for i in ids}
        voters = ",".join(f"{i}@{self.host}:{cport + step[i]}" for i in ids)
        self.nodes = [
            KafkaBroker(
                data_dir=self.data_dir if self.brokers == 1 else self.data_dir / f"node-{i}",
                port=self.port + step[i],
                controller_port=cport + step[i],
                host=self.host,
                libs_dir=self.libs_dir,
                heap=heap,
                node_id=i,
                voters=voters,
                cluster_size=self.brokers,
                name="kafka" if self.brokers == 1 else f"kafka-{i}",
            )
            for i in ids
        ]

    @classmethod
    def recorded_size(cls, data_dir: Path) -> int:
        """The number of brokers `shop infra up` last started from data_dir; 1 if none."""
        try:
            return int(json.loads((data_dir / "cluster.json").read_text())["brokers"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return 1

    @property
    def bootstrap(self) -> str:
        """Every node, so a client starts even while one of them is down."""
        return ",".join(n.bootstrap for n in self.nodes)

    @property
    def cport(self) -> int:
        return self.nodes[0].cport

    @property
    def ports(self) -> list[int]:
        """Every port the cluster listens on: clients and controllers."""
        return [p for n in self.nodes for p in (n.port, n.cport)]

    @property
    def server_log(self) -> Path:
        return self.nodes[0].server_log

    def node(self, node_id: int) -> KafkaBroker:
        return self.nodes[node_id - 1]

    def running_pid(self) -> int | None:
        """The first running node's pid (the only one for a single node)."""
        return next((p for p in self.running_pids() if p is not None), None)

    def running_pids(self) -> list[int | None]:
        return [n.running_pid() for n in self.nodes]

    def launch(self) -> None:
        """Spawn every node that does not run yet; does not wait for them."""
        recorded = self.recorded_size(self.data_dir)
        if recorded != self.brokers:
            other = KafkaCluster(self.data_dir, recorded, self.port, self.controller_port)
            if any(p is not None for p in other.running_pids()):
                raise InfraError(
                    f"a {recorded}-broker Kafka from {self.data_dir} is running; "
                    "stop it first (shop infra down)"
                )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.brokers > 1:
            self._share_cluster_id()
        (self.data_dir / "cluster.json").write_text(
            json.dumps({"brokers": self.brokers, "bootstrap": self.bootstrap})
        )
        # Each node's first start formats its storage in a JVM of its own: side by side.
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(KafkaBroker.launch, self.nodes))

    def wait_ready(self, timeout: float = 120) -> None:
        """Every node answers, and the cluster's metadata lists all of them."""
        for n in self.nodes:
            n.wait_ready(timeout)
        if self.brokers > 1:
            what = f"{self.brokers} brokers registered in {self.bootstrap}"
            wait_for(lambda: self.live_brokers() >= self.brokers, timeout=timeout, what=what)

    def start(self, timeout: float = 120) -> None:
        self.launch()
        self.wait_ready(timeout)

    def live_brokers(self) -> int:
        return run_sync(live_broker_count(self.bootstrap))

    def stop(self, timeout: float = 60) -> dict[str, bool]:
        """Stop every node at once (a node stopped last alone would wait for a quorum that is
        gone, until SIGKILL); says which were running."""
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            stopped = list(pool.map(lambda n: n.stop(timeout), self.nodes))
        return {n.name: was for n, was in zip(self.nodes, stopped, strict=True)}

    def status(self) -> list[ServiceStatus]:
        return [n.status() for n in self.nodes]

    def _share_cluster_id(self) -> None:
        """Nodes of one cluster are formatted with one cluster id, kept beside them."""
        id_file = self.data_dir / "cluster.id"
        if not id_file.exists():
            id_file.write_text(new_cluster_id() + "\n")
        for n in self.nodes:
            n.data_dir.mkdir(parents=True, exist_ok=True)
            node_id = n.data_dir / "cluster.id"
            if not node_id.exists():
                shutil.copyfile(id_file, node_id)


async def live_broker_count(bootstrap: str, timeout_ms: int = 3000) -> int:
    """Brokers in the cluster's metadata (registered and not fenced); 0 when unreachable."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        await admin.start()
        return len((await admin.describe_cluster()).get("brokers", []))
    except Exception:
        return 0
    finally:
        await admin.close()
