#!/usr/bin/env python3
"""Runs the workspace's binaries the way the rendered Deployments would: with
the containers' environment, against Redis and a Kafka-protocol broker at the
addresses the manifests name, and probes them where the manifests look.

    unshare --net --mount --fork check_serve.py --rendered FILE --examples DIR \
        --bin-dir DIR --tansu PATH --rules FILE

Must run in its own network and mount namespaces (as root): the binaries bind
the ports the manifests give them (0.0.0.0:8080, …), and the manifests' host
names (the Kafka bootstrap service, Redis) resolve to loopback through a private
/etc/hosts. Only three values differ from a cluster: the pod name (fieldRef),
the Secrets (the examples', with a made-up password and keys), and where the
keys file is mounted (a temporary directory standing in for the mount path).

Checks: each probe answers 200 on its port and path; a scan through the
gateway is decided; /metrics serves every presence_* metric the alerts and the
HPA use, with the labels they match, and each service's Kafka clients count a
broker connected, where its PodMonitor scrapes it; on SIGTERM the gateway's /readyz turns red
before it stops listening, and each binary exits within its pod's
terminationGracePeriodSeconds; resident memory stays under the memory limit.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

from manifests import (
    Binaries,
    CheckFailed,
    Problems,
    Rendered,
    Source,
    container_env,
    load_documents,
    named_port,
    port_of,
)

START_TIMEOUT = 60
VENUE = "KovZpZAnAtJJ"
PASSWORD_PLACEHOLDER = "REPLACE_WITH_THE_PASSWORD"
DIGEST_PLACEHOLDER = "REPLACE_WITH_SHA256_OF_THE_KEY"
METRIC_NAME = re.compile(r"\b(presence_[a-z0-9_]+)")
# What each pod's broker alert reads: brokers a Kafka client is connected to,
# from librdkafka's statistics (every 5 s, so not at once after start-up).
BROKERS_UP = re.compile(r"^presence_kafka_client_brokers_up\{[^}]*\} (\d+)$", re.MULTILINE)
STATISTICS_TIMEOUT = 15
QUANTITY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, body) of one request to 127.0.0.1:port; (None, error) if refused."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    except OSError as error:
        return None, str(error).encode()
    finally:
        connection.close()


def wait_for(what: str, condition, timeout: float = START_TIMEOUT, alive=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        if alive is not None and not alive():
            raise CheckFailed(f"{what}: the process exited")
        time.sleep(0.1)
    raise CheckFailed(f"{what}: not within {timeout:g} s")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Processes:
    """Started children, their logs, and stopping them all at the end."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = (self.directory / f"{name}.log").open("w")
        process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.running[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.directory / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tails(self) -> str:
        return "\n".join(
            f"--- {name}.log (last lines) ---\n" + "\n".join(self.log(name).splitlines()[-15:]) for name in self.running
        )

    def stop_all(self) -> None:
        for process in reversed(list(self.running.values())):
            if process.poll() is None:
                process.kill()
                process.wait()


def memory_bytes(quantity: str) -> int:
    for suffix, factor in QUANTITY.items():
        if quantity.endswith(suffix):
            return int(quantity.removesuffix(suffix)) * factor
    return int(quantity)


def resident_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


def prepare_network(hosts: set[str], work: Path) -> None:
    """Loopback up, and the manifests' host names on it, in this namespace only."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    hosts_file = work / "hosts"
    hosts_file.write_text("127.0.0.1 localhost " + " ".join(sorted(hosts)) + "\n")
    subprocess.run(["mount", "--bind", str(hosts_file), "/etc/hosts"], check=True)


def keys_file(template: str) -> tuple[str, dict[str, str]]:
    """The example keys file with made-up keys; returns it and key name → key."""
    keys: list[str] = []

    def digest(_match) -> str:
        keys.append(secrets.token_hex(16))
        return hashlib.sha256(keys[-1].encode()).hexdigest()

    text = re.sub(DIGEST_PLACEHOLDER, digest, template)
    entries = tomllib.loads(text)["keys"]
    return text, {entry["name"]: key for entry, key in zip(entries, keys, strict=True)}


class Stack:
    """Redis, the broker and the three services, started from the manifests."""

    def __init__(self, args, rendered: Rendered, examples: list[dict], binaries: Binaries, work: Path):
        self.args = args
        self.rendered = rendered
        self.binaries = binaries
        self.work = work
        self.processes = Processes(work)
        self.password = secrets.token_hex(12)
        self.secrets = {
            doc["metadata"]["name"]: dict(doc.get("stringData", {})) for doc in examples if doc["kind"] == "Secret"
        }
        # The Redis password is a file from the Secret; where Redis is, the ConfigMap.
        placeholder = self.secrets["presence-redis"]["password"]
        if placeholder != PASSWORD_PLACEHOLDER:
            raise CheckFailed(f"examples' presence-redis password is {placeholder!r}, not the placeholder")
        self.secrets["presence-redis"]["password"] = self.password
        redis_url = rendered.setting("presence-redis", "PRESENCE_REDIS_URL")
        text, self.keys = keys_file(self.secrets["presence-api-keys"]["keys.toml"])
        self.secrets["presence-api-keys"]["keys.toml"] = text
        self.redis = urlsplit(redis_url)
        self.brokers = rendered.setting("presence-common", "PRESENCE_KAFKA_BROKERS")
        self.services: dict[str, dict] = {}

    def start_infrastructure(self) -> None:
        broker_host, broker_port = self.brokers.rsplit(":", 1)
        prepare_network({broker_host, self.redis.hostname}, self.work)
        redis = self.processes.start(
            "redis",
            [
                "redis-server",
                "--port",
                str(self.redis.port),
                "--bind",
                "127.0.0.1",
                "--requirepass",
                self.password,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.work),
            ],
            {"PATH": os.environ["PATH"]},
        )
        wait_for("redis-server", lambda: port_open(self.redis.port), alive=lambda: redis.poll() is None)
        # tansu reads some settings from the environment: give it none.
        tansu = self.processes.start(
            "tansu",
            [
                self.args.tansu,
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{broker_port}",
                "--advertised-listener-url",
                f"tcp://{self.brokers}",
                "--storage-engine",
                "memory://tansu/",
            ],
            {"PATH": os.environ["PATH"]},
        )
        wait_for("tansu", lambda: port_open(int(broker_port)), alive=lambda: tansu.poll() is None)

    def environment(self, deployment: dict, container: dict, mounts: Path) -> dict[str, str]:
        """The container's variables as the kubelet would set them."""
        env = {"PATH": "/usr/bin:/bin"}
        paths = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes", [])}
        for mount_path, volume in paths.items():
            secret = self.secrets[volumes[volume]["secret"]["secretName"]]
            target = mounts / mount_path.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            for key, value in secret.items():
                (target / key).write_text(value)
        for name, var in container_env(self.rendered, container).items():
            if var.source.startswith("secret:"):
                secret, key = var.source.removeprefix("secret:").split("/")
                env[name] = self.secrets[secret][key]
            elif var.source == "field:metadata.name":
                env[name] = f"{deployment['metadata']['name']}-test"
            elif var.value is not None and any(var.value.startswith(p + "/") for p in paths):
                env[name] = str(mounts / var.value.lstrip("/"))
            else:
                env[name] = var.value
        return env

    def start_services(self) -> None:
        # The gateway last: it is the one that needs the others to answer.
        deployments = sorted(
            self.rendered.of_kind("Deployment"), key=lambda d: d["metadata"]["name"] == "presence-gateway"
        )
        for deployment in deployments:
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            name = deployment["metadata"]["name"]
            binary = container["command"][0].rsplit("/", 1)[1]
            env = self.environment(deployment, container, self.work / "mounts" / name)
            process = self.processes.start(name, [str(self.binaries.path(binary))], env)
            self.services[name] = {"deployment": deployment, "container": container, "process": process}

    def probe_all(self) -> None:
        for name, service in self.services.items():
            container, process = service["container"], service["process"]
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                get = container[probe]["httpGet"]
                port = named_port(container, get["port"])
                wait_for(
                    f"{name} {probe} {get['path']} on port {port} (200)",
                    lambda port=port, path=get["path"]: request(port, "GET", path)[0] == 200,
                    alive=lambda process=process: process.poll() is None,
                )
            print(f"  {name}: startup, liveness and readiness probes answer 200", file=sys.stderr)

    def gateway_port(self) -> int:
        container = self.services["presence-gateway"]["container"]
        return port_of(container_env(self.rendered, container)["PRESENCE_LISTEN"].value)

    def scan(self, problems: Problems) -> None:
        """Inventory with the admin key, a device and an enter with the venue key."""
        port = self.gateway_port()
        admin = next(key for name, key in self.keys.items() if name == "ticketing-sync")
        scanner = next(key for name, key in self.keys.items() if name == "north-gates")
        now = int(time.time() * 1000)
        event = secrets.token_hex(8).upper()
        token = str(secrets.randbelow(10**12))
        inventory = (
            "\n".join(
                json.dumps(record)
                for record in [
                    {"type": "venue", "id": VENUE, "name": "Arena"},
                    {
                        "type": "event",
                        "id": event,
                        "venueId": VENUE,
                        "name": "Check",
                        "doorsOpen": now - 3_600_000,
                        "endsAt": now + 86_400_000,
                        "status": "ACTIVE",
                        "allowReentry": True,
                    },
                    {
                        "type": "gate",
                        "venueId": VENUE,
                        "name": "Gate 1",
                        "allowedSections": [],
                        "allowedEvents": [event],
                        "openFrom": None,
                        "openUntil": None,
                    },
                    {
                        "type": "ticket",
                        "token": token,
                        "eventId": event,
                        "places": ["A:1:1"],
                        "status": "VALID",
                        "validFrom": None,
                        "validUntil": None,
                    },
                ]
            )
            + "\n"
        )
        code, body = request(port, "POST", "/admin/v1/inventory", inventory.encode(), {"X-Api-Key": admin})
        problems.check(code == 200, "inventory", f"HTTP {code}: {body[:300]!r}")
        device = {
            "venueId": VENUE,
            "name": "Check",
            "mac": "02:00:00:00:00:01",
            "ip": "10.0.0.1",
            "gateName": "Gate 1",
            "serial": "S1",
            "model": "TC52",
        }
        code, body = request(
            port, "POST", "/presence/v1/device/init", json.dumps(device).encode(), {"X-Api-Key": scanner}
        )
        if code != 200:
            problems.add("device/init", f"HTTP {code}: {body[:300]!r}")
            return
        message = json.loads(body)["message"]
        enter = {
            "token": token,
            "venueId": VENUE,
            "deviceId": message["id"],
            "gateId": message["gateId"],
            "gateName": "Gate 1",
            "deviceOs": "Printed",
            "channelId": "A",
            "scanTime": now,
        }
        code, body = request(
            port, "POST", "/presence/v1/ticket/enter", json.dumps(enter).encode(), {"X-Api-Key": scanner}
        )
        status = json.loads(body).get("result", {}).get("status") if code == 200 else None
        problems.check(status == "OKAY", "ticket/enter", f"HTTP {code}: {body[:300]!r}")
        print(f"  a scan through the gateway: HTTP {code} {status}", file=sys.stderr)

    def metrics_port(self, name: str) -> int:
        """Where the PodMonitor of Deployment `name` scrapes its pods."""
        container = self.services[name]["container"]
        for monitor in self.rendered.of_kind("PodMonitor"):
            if monitor["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/name") == name:
                return named_port(container, monitor["spec"]["podMetricsEndpoints"][0]["port"])
        raise CheckFailed(f"no PodMonitor scrapes {name}")

    def check_brokers_up(self, problems: Problems) -> None:
        """Each service's Kafka clients report a broker connected, on the port
        Prometheus scrapes: what PresenceKafkaUnreachableFromPods reads."""
        for name in sorted(self.services):
            port = self.metrics_port(name)
            counts = wait_for(
                f"{name}: presence_kafka_client_brokers_up on port {port}",
                lambda port=port: [int(n) for n in BROKERS_UP.findall(request(port, "GET", "/metrics")[1].decode())],
                timeout=STATISTICS_TIMEOUT,
            )
            problems.check(max(counts) >= 1, name, f"its Kafka clients report no broker connected: {counts}")
            print(f"  {name}: Kafka clients connected to at most {max(counts)} broker(s)", file=sys.stderr)

    def check_metrics(self, problems: Problems) -> None:
        """Every presence_* metric the alerts and the HPA name is served, with the
        labels their matchers use."""
        self.check_brokers_up(problems)
        code, body = request(self.gateway_port(), "GET", "/metrics")
        problems.check(code == 200, "/metrics", f"HTTP {code}")
        samples = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
        served = {re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0) for line in samples}
        rules = Path(self.args.rules).read_text()
        wanted = set(METRIC_NAME.findall(rules))
        for hpa in self.rendered.of_kind("HorizontalPodAutoscaler"):
            wanted |= {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
        for name in sorted(wanted - served):
            problems.add("/metrics", f"{name} is used by an alert or the HPA but not served")
        for label, pattern in re.findall(r'presence_http_requests_total\{[^}]*?(route)=~"([^"]+)"', rules):
            matched = [s for s in samples if re.search(rf'{label}="{pattern}"', s)]
            problems.check(
                bool(matched), "/metrics", f'no presence_http_requests_total sample has {label}=~"{pattern}"'
            )
        print(f"  /metrics serves the {len(wanted)} presence_* metrics the alerts and the HPA use", file=sys.stderr)

    def check_memory(self, problems: Problems) -> None:
        for name, service in self.services.items():
            limits = service["container"]["resources"]
            rss = resident_bytes(service["process"].pid)
            limit = memory_bytes(limits["limits"]["memory"])
            problems.check(
                rss < limit, name, f"resident {rss >> 20} MiB exceeds the {limits['limits']['memory']} limit"
            )
            print(
                f"  {name}: resident {rss >> 20} MiB (request {limits['requests']['memory']}, "
                f"limit {limits['limits']['memory']}; debug build, idle after one scan)",
                file=sys.stderr,
            )

    def check_shutdown(self, problems: Problems) -> None:
        """SIGTERM as the kubelet sends it: readiness red first, exit in time."""
        for name in sorted(self.services, key=lambda n: n != "presence-gateway"):
            service = self.services[name]
            process = service["process"]
            grace = service["deployment"]["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            if name == "presence-gateway":
                port = self.gateway_port()
                wait_for(
                    "gateway /readyz turning 503 after SIGTERM",
                    lambda port=port: request(port, "GET", "/readyz")[0] == 503,
                    timeout=5,
                )
            try:
                process.wait(timeout=grace)
                took = time.monotonic() - started
                problems.check(process.returncode == 0, name, f"exited with {process.returncode} after SIGTERM")
                print(f"  {name}: exited {took:.1f} s after SIGTERM (grace {grace} s)", file=sys.stderr)
            except subprocess.TimeoutExpired:
                problems.add(name, f"still running {grace} s after SIGTERM: the kubelet would SIGKILL it")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--rendered", type=Path, required=True)
    parser.add_argument("--examples", type=Path, required=True)
    parser.add_argument("--bin-dir", type=Path, required=True)
    parser.add_argument("--tansu", required=True)
    parser.add_argument("--rules", required=True)
    args = parser.parse_args()
    rendered = Rendered(args.rendered.stem, load_documents(args.rendered))
    examples = [doc for path in sorted(args.examples.glob("*.yaml")) for doc in load_documents(path)]
    problems = Problems()
    with tempfile.TemporaryDirectory(prefix="presence-serve-") as work:
        stack = Stack(args, rendered, examples, Binaries(args.bin_dir, Source(args.repo)), Path(work))
        try:
            stack.start_infrastructure()
            stack.start_services()
            stack.probe_all()
            stack.scan(problems)
            stack.check_metrics(problems)
            stack.check_memory(problems)
            stack.check_shutdown(problems)
            problems.raise_if_any()
        except CheckFailed:
            print(stack.processes.tails(), file=sys.stderr)
            raise
        finally:
            stack.processes.stop_all()
    print(f"served as {rendered.name} configures it: probes, a scan, metrics, shutdown", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckFailed as failure:
        print(f"deploy serve check failed:\n{failure}", file=sys.stderr)
        sys.exit(1)
