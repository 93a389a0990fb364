"""What the deploy/ checks share: the rendered manifests, what the workspace's
binaries read, and the facts the services' source code fixes (topic names,
consumer groups, shutdown drains), read from that code so the checks follow it."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# clap prints `[env: NAME=value]` (or `[env: NAME]` for hidden values) per flag.
HELP_ENV = re.compile(r"\[env: ([A-Z][A-Z0-9_]*)")
# A kustomize-generated ConfigMap is `<name>-<10-character hash>`.
GENERATED_SUFFIX = re.compile(r"-[a-z0-9]{10}$")


class CheckFailed(Exception):
    """One or more checks failed; the message lists them."""


@dataclass
class Problems:
    """Collects failures so one run reports all of them."""

    items: list[str] = field(default_factory=list)

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")

    def check(self, ok: bool, where: str, what: str) -> None:
        if not ok:
            self.add(where, what)

    def raise_if_any(self) -> None:
        if self.items:
            raise CheckFailed("\n".join(f"  - {item}" for item in self.items))


def load_documents(path: Path) -> list[dict]:
    with path.open() as file:
        return [doc for doc in yaml.safe_load_all(file) if doc]


def describe(doc: dict) -> str:
    meta = doc.get("metadata", {})
    namespace = meta.get("namespace")
    name = meta.get("name", "?")
    return f"{doc.get('kind')}/{namespace + '/' if namespace else ''}{name}"


class Rendered:
    """The output of `kustomize build` for one overlay."""

    def __init__(self, name: str, docs: list[dict]):
        self.name = name
        self.docs = docs

    def of_kind(self, kind: str) -> list[dict]:
        return [doc for doc in self.docs if doc.get("kind") == kind]

    def find(self, kind: str, name: str) -> dict | None:
        """The resource `name`; a generated ConfigMap is found by its base name too."""
        for doc in self.of_kind(kind):
            actual = doc["metadata"]["name"]
            if actual == name or (kind == "ConfigMap" and GENERATED_SUFFIX.sub("", actual) == name):
                return doc
        return None

    def setting(self, configmap: str, key: str) -> str:
        doc = self.find("ConfigMap", configmap)
        if doc is None or key not in doc.get("data", {}):
            raise CheckFailed(f"{self.name}: ConfigMap {configmap} has no {key}")
        return doc["data"][key]

    def workloads(self):
        """(Deployment, its pod spec, each container) of every Deployment."""
        for deployment in self.of_kind("Deployment"):
            pod = deployment["spec"]["template"]["spec"]
            for container in pod["containers"]:
                yield deployment, pod, container


@dataclass(frozen=True)
class EnvValue:
    """One variable a container gets: a literal, or where Kubernetes takes it from."""

    name: str
    value: str | None
    source: str  # "value", "configmap:<name>", "secret:<name>/<key>", "field:<path>"


def container_env(rendered: Rendered, container: dict) -> dict[str, EnvValue]:
    """Every variable the container is started with, envFrom resolved, in
    Kubernetes's order (env overrides envFrom)."""
    env: dict[str, EnvValue] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            doc = rendered.find("ConfigMap", name)
            if doc is None:
                raise CheckFailed(f"{rendered.name}: envFrom names a missing ConfigMap {name}")
            for key, value in doc.get("data", {}).items():
                env[key] = EnvValue(key, value, f"configmap:{name}")
        else:
            raise CheckFailed(f"{rendered.name}: unexpected envFrom {source}")
    for var in container.get("env", []):
        name = var["name"]
        if "value" in var:
            env[name] = EnvValue(name, var["value"], "value")
        elif "secretKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["secretKeyRef"]
            env[name] = EnvValue(name, None, f"secret:{ref['name']}/{ref['key']}")
        elif "fieldRef" in var.get("valueFrom", {}):
            env[name] = EnvValue(name, None, f"field:{var['valueFrom']['fieldRef']['fieldPath']}")
        elif "configMapKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["configMapKeyRef"]
            env[name] = EnvValue(name, rendered.setting(ref["name"], ref["key"]), f"configmap:{ref['name']}")
        else:
            raise CheckFailed(f"{rendered.name}: unexpected env source {var}")
    return env


def named_port(container: dict, port) -> int | None:
    """A probe's or a Service's port, by name or number, as a container port number."""
    for declared in container.get("ports", []):
        if port in (declared.get("name"), declared["containerPort"]):
            return declared["containerPort"]
    return None


def port_of(address: str) -> int:
    """The port of `host:port` or `[v6]:port`."""
    return int(address.rsplit(":", 1)[1])


class Binaries:
    """The workspace's built binaries and the environment variables each reads."""

    def __init__(self, bin_dir: Path, source: Source):
        self.bin_dir = bin_dir
        self.source = source
        self._env: dict[str, set[str]] = {}

    def path(self, name: str) -> Path:
        path = self.bin_dir / name
        if not os.access(path, os.X_OK):
            raise CheckFailed(
                f"{path} is missing: build with `cargo build --workspace --all-features --bins` "
                "or point PRESENCE_BIN_DIR at the binaries"
            )
        return path

    def env_vars(self, name: str) -> set[str]:
        """What `NAME --help` lists as `[env: …]`, plus RUST_LOG and the log
        format and OTLP variables when the binary installs the shared logging
        (which reads them without a flag)."""
        if name not in self._env:
            # A clean environment: clap would print values it finds set.
            help_text = subprocess.run(
                [str(self.path(name)), "--help"],
                env={"PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout
            names = set(HELP_ENV.findall(help_text))
            if self.source.reads_rust_log(name):
                names.add("RUST_LOG")
                names.update(self.source.telemetry_env())
            self._env[name] = names
        return self._env[name]


class Source:
    """Facts fixed in the services' code, read from it."""

    def __init__(self, repo: Path):
        self.repo = repo

    def read(self, relative: str) -> str:
        return (self.repo / relative).read_text()

    def find(self, relative: str, pattern: str, flags: int = 0) -> list[str]:
        found = re.findall(pattern, self.read(relative), flags)
        if not found:
            raise CheckFailed(f"{relative} no longer matches /{pattern}/: update deploy/k8s/test/manifests.py")
        return found

    def crate_of(self, binary: str) -> str:
        """services/<dir> of a binary: presence-validator → validator."""
        return binary.removeprefix("presence-") if binary != "presence" else "presence"

    def reads_rust_log(self, binary: str) -> bool:
        """The binary calls the shared init_tracing, whose filter comes from RUST_LOG."""
        runtime = self.read("services/runtime/src/telemetry.rs")
        main = self.read(f"services/{self.crate_of(binary)}/src/main.rs")
        return "EnvFilter::try_from_default_env" in runtime and "presence_runtime::init_tracing(" in main

    def telemetry_env(self) -> set[str]:
        """The variables the shared init_tracing reads besides RUST_LOG."""
        return set(self.find("services/runtime/src/telemetry.rs", r'_ENV: &str = "(\w+)"'))

    def topic_suffixes(self) -> set[str]:
        """Topics named `<prefix><suffix>` (settings.rs), the shared reply topic included."""
        return set(self.find("services/kafka/src/settings.rs", r'format!\("\{\}(\w+)", self\.prefix\)'))

    def consumed_topics(self) -> set[str]:
        """Topics the validator and the registry consume; each has a `.dlq`."""
        return {
            topic
            for binary in ("validator", "registry")
            for topic in self.find(f"services/{binary}/src/main.rs", r"topic: topics\.(\w+)\(\)")
        }

    def consumer_groups(self) -> set[str]:
        """Group names without the prefix: `validator`, `validator.inventory`, `registry`,
        and the gateways' reply readers' group (services/kafka/src/replies.rs)."""
        groups = set(self.find("services/kafka/src/replies.rs", r'format!\("\{\}([\w-]+)", settings\.topic_prefix\)'))
        for binary in ("validator", "registry"):
            main = f"services/{binary}/src/main.rs"
            text = self.read(main)
            # Either `format!("{}name", settings.service.kafka.topic_prefix)` or,
            # after `let prefix = &settings.service.kafka.topic_prefix;`,
            # `format!("{prefix}name")`; `format!("{group}.suffix")` derives from the first.
            base = re.findall(r'format!\("\{\}([\w-]+)", settings\.service\.kafka\.topic_prefix\)', text)
            if re.search(r"let prefix = &settings\.service\.kafka\.topic_prefix;", text):
                base += re.findall(r'format!\("\{prefix\}([\w-]+)"\)', text)
            if not base:
                raise CheckFailed(f"{main} names no consumer group the way this check reads: update deploy/k8s/test/manifests.py")
            groups.update(base)
            groups.update(base[0] + suffix for suffix in re.findall(r'format!\("\{group\}(\.\w+)"\)', text))
        return groups

    def drain_seconds(self, binary: str) -> int:
        """How long the consumers finish in-flight records after SIGTERM."""
        found = self.find(
            f"services/{self.crate_of(binary)}/src/main.rs", r"drain\s*[:=]\s*Duration::from_secs\((\d+)\)"
        )
        return int(found[0])
