#!/usr/bin/env python3
"""Static checks of deploy/: every rendered resource against its schema, and the
manifests against the workspace (the binaries' settings and ports, topic and
group names, the image's build); night.py adds the event-night items (grace
periods against the shutdown deadlines among them).

    check_manifests.py --repo ROOT --bin-dir DIR --examples DIR --rules-out FILE NAME=RENDERED.yaml ...

Schemas: Kubernetes kinds with kubernetes-validate (strict: unknown fields are
errors) for the oldest supported and the newest known Kubernetes; KEDA and
Prometheus Operator kinds with models generated from their published CRDs, read
strictly; Strimzi's KafkaTopic, Gateway API's HTTPRoute and Envoy Gateway's EnvoyProxy
(its access log) with the JSON schemas beside this file.
Each validator is first shown a broken resource and must reject it.
Writes the PrometheusRule's groups of the first overlay to --rules-out for promtool.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import pydantic
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication
from cloudcoil.models.prometheus_operator.v1 import PodMonitor, PrometheusRule

import night
from manifests import (
    Binaries,
    CheckFailed,
    Problems,
    Rendered,
    Source,
    container_env,
    describe,
    load_documents,
    named_port,
    port_of,
)

# The oldest Kubernetes the manifests are meant for: the gateway's preStop
# `sleep` action is on by default from 1.30 (the image has no shell to sleep in).
OLDEST_KUBERNETES = "1.30.0"
NEWEST_KUBERNETES = kubernetes_validate.utils.latest_version()
CRD_MODELS = {
    ("keda.sh/v1alpha1", "ScaledObject"): ScaledObject,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): TriggerAuthentication,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PrometheusRule,
    ("monitoring.coreos.com/v1", "PodMonitor"): PodMonitor,
}
HERE = Path(__file__).resolve().parent
JSON_SCHEMAS = {
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): json.loads((HERE / "kafkatopic-v1beta2.schema.json").read_text()),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): json.loads((HERE / "httproute-v1.schema.json").read_text()),
    ("gateway.envoyproxy.io/v1alpha1", "EnvoyProxy"): json.loads((HERE / "envoyproxy-v1alpha1.schema.json").read_text()),
}
# The ports each binary's probes must use: the listen address it reads.
LISTEN_VARS = ("PRESENCE_LISTEN", "PRESENCE_OPS_LISTEN")
# What each autoscaled Deployment's Kafka triggers watch: (topic, consumer group)
# suffixes after the prefix; the code's groups (services/*/src/main.rs).
SCALED_ON = {
    "presence-validator": {("scans", "validator")},
    "presence-registry": {("decisions", "registry-stats"), ("registry", "registry")},
}
IMAGE_BIN_DIR = "/usr/local/bin"
# The image's multi-call binary: its SERVICES table names what it runs.
MULTICALL_MAIN = "services/multicall/src/main.rs"


# --- schemas ---------------------------------------------------------------


def unread_fields(given, read, path: str = "") -> list[str]:
    """Paths of `given` that a model dropped or read as something else."""
    if isinstance(given, dict):
        if not isinstance(read, dict):
            return [path or "."]
        missing = []
        for key, value in given.items():
            if key not in read:
                missing.append(f"{path}.{key}")
            else:
                missing += unread_fields(value, read[key], f"{path}.{key}")
        return missing
    if isinstance(given, list):
        if not isinstance(read, list) or len(read) != len(given):
            return [path]
        return [p for i, item in enumerate(given) for p in unread_fields(item, read[i], f"{path}[{i}]")]
    return [] if given == read else [f"{path} (read as {read!r})"]


def schema_errors(doc: dict) -> list[str]:
    """Why `doc` does not validate; empty when it does."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRD_MODELS:
        try:
            model = CRD_MODELS[key].model_validate(doc)
        except pydantic.ValidationError as error:
            return [str(error)]
        read = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return [f"unknown or misread field {path}" for path in unread_fields(doc, read)]
    if key in JSON_SCHEMAS:
        validator = jsonschema.Draft202012Validator(JSON_SCHEMAS[key])
        return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]
    errors = []
    for version in (OLDEST_KUBERNETES, NEWEST_KUBERNETES):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"Kubernetes {version}: {'.'.join(map(str, error.path))}: {error.message}")
        except kubernetes_validate.utils.SchemaNotFoundError as error:
            errors.append(error.message)
    return errors


def broken_copies(docs: list[dict]) -> list[tuple[str, dict]]:
    """One resource of each validated family with a misspelt field, which its
    validator must reject: a validator that accepts anything proves nothing."""
    broken = []
    for doc in docs:
        kind = doc["kind"]
        if (
            kind
            in (
                "Deployment",
                "ScaledObject",
                "TriggerAuthentication",
                "PrometheusRule",
                "KafkaTopic",
                "HTTPRoute",
                "EnvoyProxy",
            )
            and kind not in dict(broken)
        ):
            bad = copy.deepcopy(doc)
            bad["spec"]["replicaz" if kind == "Deployment" else "partitionz"] = 1
            broken.append((kind, bad))
    return broken


def check_schemas(rendered: Rendered, problems: Problems) -> None:
    for doc in rendered.docs:
        for error in schema_errors(doc):
            problems.add(f"{rendered.name} {describe(doc)}", error)
    for kind, bad in broken_copies(rendered.docs):
        problems.check(bool(schema_errors(bad)), f"{rendered.name} {kind}", "a misspelt field was accepted")


# --- the manifests against the workspace -----------------------------------


def check_containers(rendered: Rendered, binaries: Binaries, installed: set[str], problems: Problems) -> None:
    """Commands, environment, probes, security and resources of every container."""
    for deployment, pod, container in rendered.workloads():
        where = f"{rendered.name} {describe(deployment)}"
        command = container.get("command", [])
        if not command or not command[0].startswith(f"{IMAGE_BIN_DIR}/"):
            problems.add(where, f"command {command} does not start a binary in {IMAGE_BIN_DIR}")
            continue
        binary = command[0].removeprefix(f"{IMAGE_BIN_DIR}/")
        problems.check(binary in installed, where, f"{binary} is not installed by deploy/docker/Dockerfile")
        reads = binaries.env_vars(binary)
        env = container_env(rendered, container)
        for name in sorted(set(env) - reads):
            problems.add(where, f"sets {name}, which {binary} does not read (its --help lists {sorted(reads)})")
        listen = [env[var].value for var in LISTEN_VARS if var in reads and var in env]
        if len(listen) != 1:
            problems.add(where, f"sets no listen address of {binary} ({' or '.join(LISTEN_VARS)})")
            continue
        listen_port = port_of(listen[0])
        problems.check(
            listen[0].startswith("0.0.0.0:") or listen[0].startswith("[::]:"),
            where,
            f"listens on {listen[0]}: the kubelet and the Service cannot reach a loopback address",
        )
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container.get(probe, {}).get("httpGet")
            if get is None:
                problems.add(where, f"has no {probe} httpGet")
                continue
            problems.check(get["path"] == path, where, f"{probe} asks {get['path']}, expected {path}")
            problems.check(
                named_port(container, get["port"]) == listen_port,
                where,
                f"{probe} port {get['port']} is not the port {binary} listens on ({listen_port})",
            )
        check_security(where, pod, container, problems)


def check_security(where: str, pod: dict, container: dict, problems: Problems) -> None:
    pod_context = pod.get("securityContext", {})
    context = container.get("securityContext", {})
    problems.check(pod_context.get("runAsNonRoot") is True, where, "runAsNonRoot is not true")
    problems.check(
        pod_context.get("seccompProfile", {}).get("type") == "RuntimeDefault", where, "seccomp is not RuntimeDefault"
    )
    problems.check(context.get("allowPrivilegeEscalation") is False, where, "privilege escalation is allowed")
    problems.check(context.get("readOnlyRootFilesystem") is True, where, "the root filesystem is writable")
    problems.check(context.get("capabilities", {}).get("drop") == ["ALL"], where, "capabilities are not all dropped")
    problems.check(pod.get("automountServiceAccountToken") is False, where, "mounts a service account token")
    for bound in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            problems.check(
                resource in container.get("resources", {}).get(bound, {}), where, f"no {resource} {bound[:-1]}"
            )
    keys = {constraint["topologyKey"] for constraint in pod.get("topologySpreadConstraints", [])}
    problems.check("topology.kubernetes.io/zone" in keys, where, "pods are not spread across zones")


def check_kafka(rendered: Rendered, source: Source, problems: Problems) -> None:
    """Topics, partitions, KEDA's trigger and the settings agree with each other and the code."""
    where = rendered.name
    prefix = rendered.setting("presence-common", "PRESENCE_TOPIC_PREFIX")
    brokers = rendered.setting("presence-common", "PRESENCE_KAFKA_BROKERS")
    topics = {doc["metadata"]["name"]: doc["spec"] for doc in rendered.of_kind("KafkaTopic")}
    expected = {prefix + name for name in source.topic_suffixes()}
    expected |= {f"{prefix}{name}.dlq" for name in source.consumed_topics()}
    problems.check(
        set(topics) == expected, where, f"KafkaTopics {sorted(topics)} are not the topics {sorted(expected)}"
    )
    scans = topics.get(prefix + "scans", {})
    for name, spec in topics.items():
        replicas = spec.get("replicas", 0)
        in_sync = int(spec.get("config", {}).get("min.insync.replicas", 0))
        problems.check(
            in_sync == 1 if replicas == 1 else 2 <= in_sync < replicas,
            f"{where} {name}",
            f"min.insync.replicas {in_sync} with {replicas} replicas: one broker down must not stop writes",
        )
    problems.check(
        topics.get(prefix + "inventory", {}).get("partitions") == 1, where, "inventory must have 1 partition"
    )
    problems.check(
        topics.get(prefix + "devices", {}).get("config", {}).get("cleanup.policy") == "compact",
        where,
        "devices must be compacted",
    )
    problems.check(
        "retention.ms" in topics.get(prefix + "decisions", {}).get("config", {}), where, "decisions need a retention"
    )
    problems.check(
        rendered.setting("presence-common", "PRESENCE_PARTITIONS") == str(scans.get("partitions")),
        where,
        "PRESENCE_PARTITIONS differs from the scans partitions",
    )
    problems.check(
        rendered.setting("presence-common", "PRESENCE_REPLICATION") == str(scans.get("replicas")),
        where,
        "PRESENCE_REPLICATION differs from the topics' replicas",
    )
    problems.check(
        rendered.setting("presence-gateway", "PRESENCE_REPLY_PARTITIONS")
        == str(topics.get(prefix + "replies", {}).get("partitions")),
        where,
        "PRESENCE_REPLY_PARTITIONS differs from the replies partitions",
    )
    # A gateway holding no reply partition is not ready: every pod needs one.
    replies_partitions = topics.get(prefix + "replies", {}).get("partitions", 0)
    for hpa in rendered.of_kind("HorizontalPodAutoscaler"):
        if hpa["spec"]["scaleTargetRef"]["name"] == "presence-gateway":
            problems.check(
                hpa["spec"]["maxReplicas"] <= replies_partitions,
                where,
                f"up to {hpa['spec']['maxReplicas']} gateways, {replies_partitions} reply partitions",
            )
    groups = {prefix + group for group in source.consumer_groups()}
    scaled_targets = set()
    for scaled in rendered.of_kind("ScaledObject"):
        spec = scaled["spec"]
        target = spec["scaleTargetRef"]["name"]
        scaled_targets.add(target)
        problems.check(
            rendered.find("Deployment", target) is not None, where, f"ScaledObject targets a missing {target}"
        )
        expected = {(prefix + topic, prefix + group) for topic, group in SCALED_ON.get(target, set())}
        kafka = [t["metadata"] for t in spec["triggers"] if t["type"] == "kafka"]
        watched = {(t.get("topic"), t.get("consumerGroup")) for t in kafka}
        problems.check(
            watched == expected, where, f"KEDA scales {target} on {sorted(watched)}, expected {sorted(expected)}"
        )
        for topic, group in watched:
            problems.check(group in groups, where, f"KEDA watches consumer group {group}, not one of the code's")
        # A consumer beyond its topics' partitions would hold none.
        partitions = min((topics.get(topic, {}).get("partitions", 0) for topic, _ in watched), default=0)
        problems.check(
            spec["maxReplicaCount"] == partitions,
            where,
            f"{target}: maxReplicaCount {spec['maxReplicaCount']} is not its topics' partitions {partitions}",
        )
        for trigger in kafka:
            problems.check(trigger.get("bootstrapServers") == brokers, where, "KEDA asks other brokers")
    for hpa in rendered.of_kind("HorizontalPodAutoscaler"):
        problems.check(
            hpa["spec"]["scaleTargetRef"]["name"] not in scaled_targets,
            where,
            f"an HPA and KEDA both scale {hpa['spec']['scaleTargetRef']['name']}",
        )
    for rule in rendered.of_kind("PrometheusRule"):
        text = json.dumps(rule)
        for group in re.findall(r'consumergroup=\\"([^"\\]+)', text):
            problems.check(
                group in groups, where, f"an alert watches consumer group {group}, not one of {sorted(groups)}"
            )
        for topic in re.findall(r'topic=\\"([^"\\]+)', text):
            problems.check(topic in topics, where, f"an alert watches topic {topic}, which is not created")


def check_wiring(rendered: Rendered, problems: Problems) -> None:
    """Selectors, Services, Ingress, PodMonitor, budgets, autoscalers, policies find their pods and ports."""
    where = rendered.name
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in rendered.of_kind("Deployment")}

    def selected(selector: dict) -> list[str]:
        labels = selector.get("matchLabels", {})
        return [n for n, t in pods.items() if labels.items() <= t["metadata"]["labels"].items()]

    def port_name_in(names: list[str], port) -> bool:
        return any(named_port(c, port) for n in names for c in pods[n]["spec"]["containers"])

    for pdb in rendered.of_kind("PodDisruptionBudget"):
        problems.check(len(selected(pdb["spec"]["selector"])) == 1, where, f"{describe(pdb)} selects no Deployment")
    problems.check(
        {p["metadata"]["name"] for p in rendered.of_kind("PodDisruptionBudget")} == set(pods),
        where,
        "every Deployment needs a PodDisruptionBudget",
    )
    services = {}
    for service in rendered.of_kind("Service"):
        targets = selected({"matchLabels": service["spec"]["selector"]})
        problems.check(len(targets) == 1, where, f"{describe(service)} selects no Deployment")
        for port in service["spec"]["ports"]:
            problems.check(
                port_name_in(targets, port["targetPort"]), where, f"{describe(service)} targets a missing port"
            )
        services[service["metadata"]["name"]] = {p["name"]: p for p in service["spec"]["ports"]}
    for ingress in rendered.of_kind("Ingress"):
        spec = ingress["spec"]
        tls_hosts = {h for tls in spec.get("tls", []) for h in tls["hosts"]}
        for rule in spec["rules"]:
            problems.check(rule["host"] in tls_hosts, where, f"{rule['host']} is served without TLS")
            paths = [p["path"] for p in rule["http"]["paths"]]
            problems.check(
                {"/presence/", "/venues/", "/board/"} <= set(paths),
                where,
                "the Ingress must route /presence/ and the venue board (/venues/, /board/)",
            )
            problems.check(
                not any(p in ("/", "/metrics", "/healthz", "/readyz") for p in paths),
                where,
                "the Ingress exposes operations endpoints",
            )
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                problems.check(
                    backend["port"].get("name") in services.get(backend["name"], {}),
                    where,
                    f"Ingress path {path['path']} routes to a missing Service port",
                )
    for route in rendered.of_kind("HTTPRoute"):
        for rule in route["spec"]["rules"]:
            for backend in rule["backendRefs"]:
                problems.check(
                    backend["port"] in {p["port"] for p in services.get(backend["name"], {}).values()},
                    where,
                    f"{describe(route)} routes to a missing Service port {backend['name']}:{backend['port']}",
                )
    for monitor in rendered.of_kind("PodMonitor"):
        targets = selected(monitor["spec"]["selector"])
        problems.check(len(targets) == 1, where, f"{describe(monitor)} selects no Deployment")
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            problems.check(
                port_name_in(targets, endpoint["port"]), where, f"{describe(monitor)} scrapes a missing port"
            )
    for hpa in rendered.of_kind("HorizontalPodAutoscaler"):
        problems.check(
            hpa["spec"]["scaleTargetRef"]["name"] in pods, where, f"{describe(hpa)} targets a missing Deployment"
        )
        problems.check(hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"], where, f"{describe(hpa)} min > max")
        metrics = {m["type"] for m in hpa["spec"]["metrics"]}
        problems.check({"Resource", "Pods"} <= metrics, where, f"{describe(hpa)} needs CPU and in-flight metrics")
    policies = rendered.of_kind("NetworkPolicy")
    problems.check(
        any(
            p["spec"]["podSelector"] == {}
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress")
            and not p["spec"].get("egress")
            for p in policies
        ),
        where,
        "no default-deny NetworkPolicy",
    )
    gateway_ports = {c["containerPort"] for c in pods["presence-gateway"]["spec"]["containers"][0]["ports"]}
    for policy in policies:
        if policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == "presence-gateway":
            allowed = {p["port"] for rule in policy["spec"].get("ingress", []) for p in rule.get("ports", [])}
            problems.check(
                allowed == gateway_ports,
                where,
                f"the gateway policy opens {allowed}, the gateway serves {gateway_ports}",
            )


def check_keys_file(rendered: Rendered, examples: list[dict], problems: Problems) -> None:
    """The gateway's keys file variable points into the mounted Secret, whose
    example holds a key of that name (night.check_secret_files checks the
    other credentials' files)."""
    shapes = {doc["metadata"]["name"]: set(doc.get("stringData", {})) for doc in examples if doc["kind"] == "Secret"}
    for deployment, pod, container in rendered.workloads():
        keys_file = container_env(rendered, container).get("PRESENCE_API_KEYS_FILE")
        if keys_file is None:
            continue
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        files = {
            f"{mount['mountPath']}/{key}"
            for mount in container.get("volumeMounts", [])
            for key in shapes.get(volumes[mount["name"]].get("secret", {}).get("secretName"), ())
        }
        problems.check(
            keys_file.value in files,
            f"{rendered.name} {describe(deployment)}",
            f"PRESENCE_API_KEYS_FILE is not one of the mounted files {sorted(files)}",
        )


def check_images(rendered: Rendered, problems: Problems) -> None:
    images = {container["image"] for _, _, container in rendered.workloads()}
    problems.check(len(images) == 1, rendered.name, f"the services run different images {images}")
    for image in images:
        problems.check(
            ":" in image.rsplit("/", 1)[-1] or "@sha256:" in image,
            rendered.name,
            f"image {image} has no tag: set one in the overlay",
        )
        problems.check(not image.endswith(":latest"), rendered.name, f"image {image} is not pinned")


# --- the image -------------------------------------------------------------


def dockerfile_arg(text: str, name: str) -> str:
    found = re.search(rf'^ARG {name}="([^"]*)"', text, re.MULTILINE)
    if not found:
        raise CheckFailed(f'deploy/docker/Dockerfile has no ARG {name}="…"')
    return found.group(1)


def check_dockerfile(repo: Path, problems: Problems) -> set[str]:
    """The build's packages, features and installed binaries exist in the
    workspace, and the services' links name exactly the services the multi-call
    binary runs; returns the programs the image installs (binaries and links)."""
    where = "deploy/docker/Dockerfile"
    text = (repo / where).read_text()
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    packages = {p["name"]: p for p in metadata["packages"]}
    chosen = re.findall(r"-p (\S+)", dockerfile_arg(text, "PACKAGES"))
    for name in chosen:
        problems.check(name in packages, where, f"package {name} is not in the workspace")
    for feature in dockerfile_arg(text, "FEATURES").split(","):
        package, _, flag = feature.partition("/")
        problems.check(
            flag in packages.get(package, {}).get("features", {}), where, f"feature {feature} does not exist"
        )
    bins = {t["name"] for name in chosen for t in packages.get(name, {}).get("targets", []) if "bin" in t["kind"]}
    installed = set(re.findall(r"target/release/(\S+)", text))
    problems.check(installed == bins, where, f"installs {sorted(installed)}, the packages build {sorted(bins)}")
    services = set(dockerfile_arg(text, "SERVICES").split())
    problems.check(
        re.search(r'for service in \$\{SERVICES\}; do ln -s presence-services "/out/\$\{service\}"', text)
        is not None,
        where,
        "does not link each of SERVICES to presence-services",
    )
    dispatched = set(
        re.findall(r'\("(presence-[a-z]+)", \w+::main\)', (repo / MULTICALL_MAIN).read_text())
    )
    problems.check(
        services == dispatched,
        where,
        f"links {sorted(services)}, but presence-services ({MULTICALL_MAIN}) runs {sorted(dispatched)}",
    )
    installed |= services
    problems.check(
        f"COPY --from=binaries /out/ {IMAGE_BIN_DIR}/" in text, where, f"binaries do not land in {IMAGE_BIN_DIR}"
    )
    problems.check(
        re.search(r"^ARG RUNTIME_BASE=gcr\.io/distroless/cc-debian12:nonroot$", text, re.MULTILINE) is not None,
        where,
        "the runtime base's default is not distroless's cc image",
    )
    problems.check(
        re.search(r"^HEALTHCHECK", text, re.MULTILINE) is None, where, "has a HEALTHCHECK: Kubernetes probes instead"
    )
    problems.check(re.search(r"^USER 65532:65532$", text, re.MULTILINE) is not None, where, "does not run as 65532")
    problems.check("--locked" in text, where, "builds without --locked")
    ignored = [
        line.strip()
        for line in (repo / "deploy/docker/Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    tracked = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True).stdout.split()
    for path in tracked:
        for pattern in ignored:
            bare = pattern.removeprefix("**/").rstrip("/")
            parts = path.split("/")
            hit = (
                any(Path(*parts[: i + 1]).match(bare) for i in range(len(parts)))
                if pattern.startswith("**/")
                else path == bare or path.startswith(bare + "/") or Path(path).match(bare)
            )
            problems.check(not hit, "deploy/docker/Dockerfile.dockerignore", f"{pattern} keeps {path} out of the build")
    return installed


def write_rules(rendered: Rendered, out: Path) -> None:
    rules = rendered.of_kind("PrometheusRule")
    if len(rules) != 1:
        raise CheckFailed(f"{rendered.name}: expected one PrometheusRule, found {len(rules)}")
    out.write_text(yaml.safe_dump({"groups": rules[0]["spec"]["groups"]}, sort_keys=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--bin-dir", type=Path, required=True)
    parser.add_argument("--examples", type=Path, required=True)
    parser.add_argument("--rules-out", type=Path, required=True)
    parser.add_argument("rendered", nargs="+", help="NAME=FILE of a `kustomize build` output")
    args = parser.parse_args()
    source = Source(args.repo)
    binaries = Binaries(args.bin_dir, source)
    problems = Problems()
    examples = [doc for path in sorted(args.examples.glob("*.yaml")) for doc in load_documents(path)]
    check_schemas(Rendered("examples", examples), problems)
    installed = check_dockerfile(args.repo, problems)
    overlays = []
    for item in args.rendered:
        name, _, path = item.partition("=")
        overlays.append(Rendered(name, load_documents(Path(path))))
    for rendered in overlays:
        check_schemas(rendered, problems)
        check_containers(rendered, binaries, installed, problems)
        check_kafka(rendered, source, problems)
        check_wiring(rendered, problems)
        check_keys_file(rendered, examples, problems)
        check_images(rendered, problems)
        print(f"checked {rendered.name}: {len(rendered.docs)} resources", file=sys.stderr)
    prefix = overlays[0].setting("presence-common", "PRESENCE_TOPIC_PREFIX")
    rejected = night.check_all(args.repo, overlays, examples, prefix, problems)
    print(f"event-night items checked; {rejected} broken copies of the renderings were rejected", file=sys.stderr)
    write_rules(overlays[0], args.rules_out)
    problems.raise_if_any()
    print(
        f"manifests: {sum(len(r.docs) for r in overlays)} resources in {len(overlays)} overlays and "
        f"{len(examples)} examples valid (Kubernetes {OLDEST_KUBERNETES} and {NEWEST_KUBERNETES}, "
        "KEDA 2.16 and Prometheus Operator 0.80 CRD models, Strimzi KafkaTopic v1beta2, Gateway API "
        "HTTPRoute v1 and Envoy Gateway EnvoyProxy access log schemas); "
        "settings, ports, probes, deadlines, topics and image agree with the workspace",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckFailed as failure:
        print(f"deploy checks failed:\n{failure}", file=sys.stderr)
        sys.exit(1)
