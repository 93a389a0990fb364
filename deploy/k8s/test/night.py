"""The event-night checks of the rendered manifests (an SRE's review: draining,
grace periods, what the public entry exposes and routes, scaling the registry,
alerts, budgets, priority, zones, memory, egress, secrets, KEDA's credentials,
image pinning, ingress neutrality, access logs, runbooks), each with breakers:
functions that break a copy of a rendering (or find nothing to break in it).
check_all runs every check on every rendering, then on every broken copy, where
it must fail: a check that passes a broken copy proves nothing."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from manifests import Problems, Rendered, Source, container_env, describe, port_of

# The scan path's Deployments: scanners wait on each (a decision, a device call).
SCAN_PATH = ("presence-gateway", "presence-validator", "presence-registry")
ZONE = "topology.kubernetes.io/zone"
# Margin the kubelet's grace keeps beyond the pause and the service's own shutdown.
GRACE_MARGIN_SECONDS = 10
# How much longer than that the grace may be: a longer one only slows node
# drains and rollouts.
GRACE_SLACK_SECONDS = 10
# After a consumer's drain: the final offset commit and leaving the group.
CONSUMER_CLOSE_SECONDS = 10
# The shortest preStop pause that outlasts endpoint propagation (kube-proxy,
# ingress controllers sync within a few seconds).
MIN_PRESTOP_SECONDS = 5
# nginx variables that carry the query string (and so the `apikey` parameter),
# or the Referer: the venue board's page address, `?apikey=` included, is the
# Referer of its script, style and live stream requests.
QUERY_VARIABLES = re.compile(r"\$(request|request_uri|args|query_string|arg_apikey|http_referer)\b")
# Envoy command operators (Envoy Gateway's EnvoyProxy access log) that carry the
# query string: the request path (`:PATH`, and Envoy Gateway's default
# `X-ENVOY-ORIGINAL-PATH?:PATH`) unless through REQ_WITHOUT_QUERY, and the Referer.
ENVOY_QUERY_OPERATORS = re.compile(r"%(REQ|REQUEST_HEADER)\([^)]*PATH[^)]*\)|REFERER", re.IGNORECASE)
ENVOY_PATH_WITHOUT_QUERY = "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%"
# Annotations every controller honours or ignores alike.
NEUTRAL_ANNOTATIONS = ("cert-manager.io/",)
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
RUNBOOKS = (
    "Runbook: broker outage",
    "Runbook: Redis failover",
    "Runbook: scale before doors open",
    "Runbook: roll back a release",
    "Runbook: restore from backup",
)
MEBI = 2**20
QUANTITY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def quantity(text: str) -> int:
    for suffix, factor in QUANTITY.items():
        if text.endswith(suffix):
            return int(float(text.removesuffix(suffix)) * factor)
    return int(text)


def is_production(rendered: Rendered) -> bool:
    """Every rendering but the development overlay's is production-like."""
    return rendered.name != "overlays-dev"


def selects(selector: dict, labels: dict) -> bool:
    """Whether a NetworkPolicy's podSelector selects pods labelled `labels`."""
    if not labels.items() >= selector.get("matchLabels", {}).items():
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        if expression["operator"] == "In" and value not in expression["values"]:
            return False
        if expression["operator"] == "NotIn" and value in expression["values"]:
            return False
        if expression["operator"] == "Exists" and value is None:
            return False
    return True


def deployments(rendered: Rendered):
    """(name, pod spec, first container) of each Deployment."""
    for deployment in rendered.of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        yield deployment["metadata"]["name"], pod, pod["containers"][0]


def routed_by_services(rendered: Rendered) -> set[str]:
    """Deployments a Service sends traffic to."""
    names = set()
    for service in rendered.of_kind("Service"):
        for deployment in rendered.of_kind("Deployment"):
            if service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items():
                names.add(deployment["metadata"]["name"])
    return names


def prestop_seconds(container: dict) -> int:
    return container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)


def alert_rules(rendered: Rendered) -> dict[str, dict]:
    return {
        rule["alert"]: rule
        for doc in rendered.of_kind("PrometheusRule")
        for group in doc["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def alert_expressions(rendered: Rendered) -> dict[str, str]:
    return {name: rule["expr"] for name, rule in alert_rules(rendered).items()}


def duration_seconds(text: str) -> float:
    """A Prometheus duration (`90s`, `1m`, `1h30m`) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(value) * units[unit] for value, unit in re.findall(r"(\d+)(ms|s|m|h|d)", text))


def public_paths(entry: dict) -> set[tuple[str, str]]:
    """(path, match type) of every route of an Ingress or an HTTPRoute, in
    Gateway API's terms (an Ingress's Prefix is a PathPrefix)."""
    if entry["kind"] == "Ingress":
        return {
            (path["path"], "PathPrefix" if path["pathType"] == "Prefix" else path["pathType"])
            for rule in entry["spec"]["rules"]
            for path in rule["http"]["paths"]
        }
    return {
        (match["path"]["value"], match["path"]["type"])
        for rule in entry["spec"].get("rules", [])
        for match in rule.get("matches", [{"path": {"type": "PathPrefix", "value": "/"}}])
    }


def under_prefix(path: str, prefix: str) -> bool:
    """Whether a PathPrefix `prefix` matches `path` (element by element)."""
    base = prefix.rstrip("/")
    return path == base or path.startswith(base + "/")


# --- the checks ------------------------------------------------------------


def check_prestop(rendered: Rendered, problems: Problems) -> None:
    """Pods behind a Service pause in preStop so endpoints drain before SIGTERM."""
    for name, _, container in deployments(rendered):
        if name in routed_by_services(rendered):
            problems.check(
                prestop_seconds(container) >= MIN_PRESTOP_SECONDS,
                f"{rendered.name} {name}",
                f"no preStop sleep of at least {MIN_PRESTOP_SECONDS} s: endpoints may still route to it after SIGTERM",
            )


def check_grace(rendered: Rendered, problems: Problems, source: Source) -> None:
    """terminationGracePeriodSeconds covers the preStop pause, the binary's own
    shutdown deadline and GRACE_MARGIN_SECONDS, and not much more."""
    for name, pod, container in deployments(rendered):
        where = f"{rendered.name} {name}"
        binary = container["command"][0].rsplit("/", 1)[-1]
        env = container_env(rendered, container)
        if binary == "presence-gateway":
            needed = {"PRESENCE_SHUTDOWN_GRACE_MS", "PRESENCE_REQUEST_TIMEOUT_MS"}
            if not needed <= set(env):
                problems.add(where, f"the shutdown deadline depends on {sorted(needed)}: set them explicitly")
                continue
            deadline = (
                int(env["PRESENCE_SHUTDOWN_GRACE_MS"].value) / 1000
                + int(env["PRESENCE_REQUEST_TIMEOUT_MS"].value) / 1000
                # Leaving the gateways' group, its last act.
                + CONSUMER_CLOSE_SECONDS
            )
        else:
            deadline = source.drain_seconds(binary) + CONSUMER_CLOSE_SECONDS
        pause = prestop_seconds(container)
        least = pause + deadline + GRACE_MARGIN_SECONDS
        grace = pod.get("terminationGracePeriodSeconds", 30)
        problems.check(
            least <= grace <= least + GRACE_SLACK_SECONDS,
            where,
            f"terminationGracePeriodSeconds {grace} does not cover the preStop pause {pause} s, the shutdown "
            f"deadline {deadline:g} s and {GRACE_MARGIN_SECONDS} s of margin ({least:g} s) closely",
        )


def check_admin_private(rendered: Rendered, problems: Problems) -> None:
    """No public route reaches /admin/; the Service presence-admin does, inside."""

    def reaches_admin(path: str, kind: str) -> bool:
        if kind in ("Prefix", "PathPrefix", "ImplementationSpecific"):
            return "/admin/".startswith(path.rstrip("/") + "/") or path in ("", "/")
        if kind == "RegularExpression":
            return True
        return path.startswith("/admin")

    for ingress in rendered.of_kind("Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                problems.check(
                    not reaches_admin(path["path"], path["pathType"]),
                    f"{rendered.name} {describe(ingress)}",
                    f"path {path['path']} ({path['pathType']}) exposes /admin/ publicly",
                )
    for route in rendered.of_kind("HTTPRoute"):
        for rule in route["spec"].get("rules", []):
            for match in rule.get("matches", [{}]):
                path = match.get("path", {"type": "PathPrefix", "value": "/"})
                problems.check(
                    not reaches_admin(path["value"], path["type"]),
                    f"{rendered.name} {describe(route)}",
                    f"path {path['value']} ({path['type']}) exposes /admin/ publicly",
                )
    admin = rendered.find("Service", "presence-admin")
    problems.check(
        admin is not None
        and "presence-gateway" in routed_by_services(Rendered(rendered.name, [admin, *rendered.of_kind("Deployment")])),
        rendered.name,
        "no Service presence-admin reaches the gateway inside the cluster",
    )


def check_public_entry(rendered: Rendered, problems: Problems, routes: set[tuple[str, str]]) -> None:
    """The scanners' way in is controller-neutral (an Ingress with no
    controller's annotations, or a Gateway API HTTPRoute) and routes what the
    production Ingress routes (`routes`): each of its paths, and nothing outside
    them (a longer prefix under one of them may carry its own settings)."""
    entries = rendered.of_kind("Ingress") + rendered.of_kind("HTTPRoute")
    problems.check(len(entries) >= 1, rendered.name, "no Ingress or HTTPRoute routes the scanners' API")
    for ingress in rendered.of_kind("Ingress"):
        for annotation in ingress["metadata"].get("annotations", {}):
            problems.check(
                annotation.startswith(NEUTRAL_ANNOTATIONS),
                f"{rendered.name} {describe(ingress)}",
                f"annotation {annotation} ties the Ingress to one controller",
            )
    for entry in entries:
        paths = public_paths(entry)
        missing = routes - paths
        beyond = {
            (path, kind)
            for path, kind in paths - routes
            if not any(route_kind == "PathPrefix" and under_prefix(path, route) for route, route_kind in routes)
        }
        problems.check(
            not missing, f"{rendered.name} {describe(entry)}", f"does not route {sorted(missing)}, as the Ingress does"
        )
        problems.check(
            not beyond, f"{rendered.name} {describe(entry)}", f"routes {sorted(beyond)}, which the Ingress does not"
        )


def check_registry_scaling(rendered: Rendered, problems: Problems, prefix: str) -> None:
    """The registry scales on the lag of the decisions it counts, and that lag alerts."""
    triggers = [
        trigger["metadata"]
        for scaled in rendered.of_kind("ScaledObject")
        if scaled["spec"]["scaleTargetRef"]["name"] == "presence-registry"
        for trigger in scaled["spec"]["triggers"]
        if trigger["type"] == "kafka"
    ]
    problems.check(
        any(
            t.get("topic") == f"{prefix}decisions" and t.get("consumerGroup") == f"{prefix}registry-stats"
            for t in triggers
        ),
        rendered.name,
        "no ScaledObject scales the registry on its decisions lag",
    )
    problems.check(
        any(
            f'consumergroup="{prefix}registry-stats"' in expr and f'topic="{prefix}decisions"' in expr
            for expr in alert_expressions(rendered).values()
        ),
        rendered.name,
        "no alert watches the registry's decisions lag",
    )


BROKER_COUNT_DROPS = re.compile(r"max\(kafka_brokers\)\s*<\s*max\(max_over_time\(kafka_brokers\[")
BROKER_COUNT_ABSENT = re.compile(r"\bor\s+absent\(kafka_brokers\)")
POD_SEES_NO_BROKER = re.compile(
    r"max by \(namespace, pod\) \(presence_kafka_client_brokers_up(\{[^}]*\})?\)\s*==\s*0"
)
POD_REPORTS_NO_BROKER_FIGURE = re.compile(r"unless on \(namespace, pod\)\s*presence_kafka_client_brokers_up\b")
# The longest an unreachable broker may go unpaged from Presence's own pods.
POD_BROKER_ALERT_SECONDS = 60


def check_night_alerts(rendered: Rendered, problems: Problems) -> None:
    """Paging alerts for an unreachable broker, seen from the cluster (the
    exporter's broker count dropping, or no count at all) and from Presence's
    pods (no Kafka client of a pod connected to a broker, or a scraped pod that
    reports no such figure, within a minute), and for gateways up but not ready.
    alerts.test.yaml proves they fire."""
    rules = [rule for rule in alert_rules(rendered).values() if rule.get("labels", {}).get("severity") == "page"]
    problems.check(
        any(BROKER_COUNT_DROPS.search(r["expr"]) and BROKER_COUNT_ABSENT.search(r["expr"]) for r in rules),
        rendered.name,
        "no paging alert for brokers the cluster lost: the Kafka Exporter's kafka_brokers below its recent "
        "maximum, or absent (every broker or the exporter down)",
    )
    problems.check(
        any(
            POD_SEES_NO_BROKER.search(r["expr"])
            and POD_REPORTS_NO_BROKER_FIGURE.search(r["expr"])
            and duration_seconds(r.get("for", "0s")) <= POD_BROKER_ALERT_SECONDS
            for r in rules
        ),
        rendered.name,
        f"no paging alert within {POD_BROKER_ALERT_SECONDS} s for a Presence pod connected to no broker "
        "(presence_kafka_client_brokers_up == 0 per pod, or not reported by a scraped pod)",
    )
    problems.check(
        any("kube_pod_status_ready" in r["expr"] and "presence-gateway" in r["expr"] for r in rules),
        rendered.name,
        "no paging alert for gateways that run but are not ready",
    )


def check_budgets(rendered: Rendered, problems: Problems) -> None:
    for pdb in rendered.of_kind("PodDisruptionBudget"):
        problems.check(
            pdb["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow",
            f"{rendered.name} {describe(pdb)}",
            "unhealthyPodEvictionPolicy is not AlwaysAllow: a stuck pod would block node drains",
        )


def check_priority(rendered: Rendered, problems: Problems) -> None:
    classes = {doc["metadata"]["name"]: doc for doc in rendered.of_kind("PriorityClass")}
    for name, pod, _ in deployments(rendered):
        if name not in SCAN_PATH:
            continue
        chosen = classes.get(pod.get("priorityClassName", ""))
        problems.check(
            chosen is not None and 0 < chosen["value"] < 1_000_000_000,
            f"{rendered.name} {name}",
            f"priorityClassName {pod.get('priorityClassName')!r} is not a rendered PriorityClass "
            "above 0 and below the system classes",
        )


def check_zone_spread(rendered: Rendered, problems: Problems) -> None:
    """Spread over zones, yet schedulable with a zone lost: soft, or hard with the
    lost zone's tainted nodes left out of the count."""
    for name, pod, _ in deployments(rendered):
        zones = [c for c in pod.get("topologySpreadConstraints", []) if c["topologyKey"] == ZONE]
        problems.check(bool(zones), f"{rendered.name} {name}", "not spread across zones")
        for constraint in zones:
            problems.check(
                constraint["whenUnsatisfiable"] == "ScheduleAnyway" or constraint.get("nodeTaintsPolicy") == "Honor",
                f"{rendered.name} {name}",
                "a hard zone spread that counts a lost zone's nodes keeps pods pending",
            )


def measured_memory(docs: str) -> dict[str, int]:
    """Peak resident memory per service, from docs/operations.md's table
    (`| presence-gateway | … | 23 MiB | …`, the third column)."""
    section = docs.split("### Memory requests", 1)[-1].split("\n## ", 1)[0]
    found = re.findall(r"^\| `?(presence-[a-z]+)`? \| [^|]+\| ([0-9.]+) MiB \|", section, re.MULTILINE)
    return {name: int(float(value) * MEBI) for name, value in found}


def check_memory_requests(rendered: Rendered, problems: Problems, measured: dict[str, int]) -> None:
    """Production memory requests cover the RSS measured under load, without
    reserving far more (the scheduler packs nodes by requests)."""
    if not is_production(rendered):
        return
    for name, _, container in deployments(rendered):
        peak = measured.get(name)
        if peak is None:
            problems.add(f"{rendered.name} {name}", "docs/operations.md records no memory measured under load")
            continue
        request = quantity(container["resources"]["requests"]["memory"])
        problems.check(
            peak <= request <= max(2 * peak, peak + 64 * MEBI),
            f"{rendered.name} {name}",
            f"memory request {request // MEBI} MiB does not match the {peak / MEBI:.0f} MiB measured under load",
        )


def endpoints(rendered: Rendered, container: dict) -> list[tuple[str, str, int]]:
    """(what, host, port) of each address the container is configured to reach."""
    env = container_env(rendered, container)
    found = []
    if env.get("PRESENCE_KAFKA_BROKERS") and env["PRESENCE_KAFKA_BROKERS"].value:
        for broker in env["PRESENCE_KAFKA_BROKERS"].value.split(","):
            found.append(("Kafka", broker.rsplit(":", 1)[0], port_of(broker)))
    if env.get("PRESENCE_REDIS_URL") and env["PRESENCE_REDIS_URL"].value:
        for url in env["PRESENCE_REDIS_URL"].value.split(","):
            address = re.sub(r"^\w+://([^@/]*@)?", "", url).split("/")[0]
            found.append(("Redis", address.rsplit(":", 1)[0], port_of(address) if ":" in address else 6379))
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") and env["OTEL_EXPORTER_OTLP_ENDPOINT"].value:
        address = re.sub(r"^\w+://", "", env["OTEL_EXPORTER_OTLP_ENDPOINT"].value).split("/")[0]
        found.append(("OTLP", address.rsplit(":", 1)[0], port_of(address) if ":" in address else 4317))
    return found


def check_egress(rendered: Rendered, problems: Problems) -> None:
    """Each configured address has an egress rule for its port: to its namespace
    for a cluster service (`NAME.NAMESPACE.svc`), to an ipBlock otherwise."""
    policies = [p for p in rendered.of_kind("NetworkPolicy") if "Egress" in p["spec"].get("policyTypes", [])]
    for deployment in rendered.of_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        rules = [
            rule
            for policy in policies
            if selects(policy["spec"]["podSelector"], labels)
            for rule in policy["spec"].get("egress", [])
        ]
        for what, host, port in endpoints(rendered, container):
            parts = host.split(".")
            namespace = parts[1] if len(parts) >= 3 and parts[2] == "svc" else None

            def allows(rule: dict) -> bool:
                ports = {p.get("port") for p in rule.get("ports", [])}
                if ports and port not in ports:
                    return False
                peers = rule.get("to", [])
                if namespace is None:
                    return any("ipBlock" in peer for peer in peers)
                return any(
                    peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                    == namespace
                    for peer in peers
                )

            problems.check(
                any(allows(rule) for rule in rules),
                f"{rendered.name} {describe(deployment)}",
                f"no egress rule lets it reach {what} at {host}:{port}",
            )


def check_secret_files(rendered: Rendered, problems: Problems, shapes: dict[str, set[str]]) -> None:
    """Credentials reach the services as files from mounted Secrets, never as
    environment variables; every *_FILE setting names a key of a mounted Secret."""
    for deployment, pod, container in rendered.workloads():
        where = f"{rendered.name} {describe(deployment)}"
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        files = set()
        for mount in container.get("volumeMounts", []):
            secret = volumes[mount["name"]].get("secret")
            if secret is None:
                continue
            name = secret["secretName"]
            problems.check(name in shapes, where, f"mounts Secret {name}, which has no example")
            keys = [item["path"] for item in secret.get("items", [])] or sorted(shapes.get(name, ()))
            for item in secret.get("items", []):
                problems.check(item["key"] in shapes.get(name, ()), where, f"mounts {name}/{item['key']}: no example")
            files |= {f"{mount['mountPath']}/{key}" for key in keys}
        for var in container_env(rendered, container).values():
            problems.check(
                not var.source.startswith("secret:"), where, f"{var.name} is a Secret as an environment variable"
            )
            if var.name.endswith("_FILE") and var.value and var.value.startswith("/etc/presence/"):
                problems.check(var.value in files, where, f"{var.name}={var.value} is no mounted Secret's file")


def check_keda_auth(rendered: Rendered, problems: Problems) -> None:
    """KEDA reads the lag with the services' Kafka security: a secured cluster
    needs a TriggerAuthentication on every Kafka trigger."""
    common = rendered.find("ConfigMap", "presence-common")["data"]
    protocol = common.get("PRESENCE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    if protocol == "PLAINTEXT":
        return
    needed = set()
    if protocol.startswith("SASL_"):
        needed |= {"sasl", "username", "password"}
    if protocol.endswith("SSL"):
        needed |= {"tls"}
    authentications = {
        doc["metadata"]["name"]: {ref["parameter"] for ref in doc["spec"].get("secretTargetRef", [])}
        for doc in rendered.of_kind("TriggerAuthentication")
    }
    for scaled in rendered.of_kind("ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            if trigger["type"] != "kafka":
                continue
            reference = trigger.get("authenticationRef", {}).get("name")
            given = authentications.get(reference)
            problems.check(
                given is not None and needed <= given,
                f"{rendered.name} {describe(scaled)}",
                f"a kafka trigger on {protocol} has no TriggerAuthentication giving {sorted(needed)}",
            )


def check_digest(rendered: Rendered, problems: Problems) -> None:
    if not is_production(rendered):
        return
    for _, _, container in rendered.workloads():
        problems.check(
            DIGEST.search(container["image"]) is not None,
            rendered.name,
            f"image {container['image']} is not pinned by digest",
        )


def nginx_log_formats(examples: list[dict]) -> list[dict]:
    """ingress-nginx ConfigMaps setting the access log format."""
    return [doc for doc in examples if doc["kind"] == "ConfigMap" and "log-format-upstream" in doc.get("data", {})]


def envoy_log_formats(examples: list[dict]) -> list[dict]:
    """The format of each access log setting of Envoy Gateway's EnvoyProxy resources."""
    return [
        setting["format"]
        for doc in examples
        if doc["kind"] == "EnvoyProxy"
        for setting in doc["spec"].get("telemetry", {}).get("accessLog", {}).get("settings", [])
    ]


def check_access_log(examples: list[dict], problems: Problems) -> None:
    """The access log examples, for ingress-nginx and for Envoy Gateway, log the
    path and never the query string (nor the Referer, which holds the board's)."""
    nginx = [doc["data"]["log-format-upstream"] for doc in nginx_log_formats(examples)]
    problems.check(bool(nginx), "examples", "no access log format for ingress-nginx")
    for text in nginx:
        problems.check("$uri" in text, "examples access log", "does not log the path ($uri)")
        for variable in QUERY_VARIABLES.findall(text):
            problems.check(False, "examples access log", f"${variable} would record the apikey query parameter")
    envoy = envoy_log_formats(examples)
    problems.check(bool(envoy), "examples", "no access log format for Envoy Gateway (EnvoyProxy)")
    for log_format in envoy:
        text = log_format.get("text", "") + " ".join(log_format.get("json", {}).values())
        problems.check(
            ENVOY_PATH_WITHOUT_QUERY in text, "examples EnvoyProxy access log", f"does not log {ENVOY_PATH_WITHOUT_QUERY}"
        )
        for operator in ENVOY_QUERY_OPERATORS.finditer(text):
            problems.check(
                False, "examples EnvoyProxy access log", f"{operator.group(0)} would record the apikey query parameter"
            )


def check_runbooks(docs: str, rendered: Rendered, problems: Problems) -> None:
    """docs/operations.md has each runbook, naming an alert that exists."""
    alerts = set(alert_expressions(rendered))
    for title in RUNBOOKS:
        if f"### {title}" not in docs:
            problems.add("docs/operations.md", f"no section ### {title}")
            continue
        section = docs.split(f"### {title}", 1)[1].split("\n##", 1)[0]
        named = re.findall(r"Alert: `(\w+)`", section)
        problems.check(
            bool(named) and all(a in alerts for a in named),
            f"docs/operations.md {title}",
            f"names alerts {named}, not among the rules' {sorted(alerts)}",
        )


# --- breakers --------------------------------------------------------------


def broken(rendered: Rendered, change: Callable[[list[dict]], bool]) -> Rendered | None:
    """A copy of `rendered` with `change` applied, or None when `change` found
    nothing to break in it."""
    docs = copy.deepcopy(rendered.docs)
    return Rendered(rendered.name, docs) if change(docs) else None


def each(docs: list[dict], kind: str, name: str | None = None):
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def container_of(docs: list[dict], name: str) -> dict:
    return each(docs, "Deployment", name)[0]["spec"]["template"]["spec"]["containers"][0]


def drop_prestop(docs):
    container_of(docs, "presence-gateway").pop("lifecycle", None)
    return True


def lengthen_prestop(docs):
    """The gateway pauses longer before SIGTERM, its grace period unchanged."""
    lifecycle = container_of(docs, "presence-gateway")["lifecycle"]
    lifecycle["preStop"]["sleep"]["seconds"] += GRACE_SLACK_SECONDS + 1
    return True


def prolong_grace(docs):
    pod = each(docs, "Deployment", "presence-validator")[0]["spec"]["template"]["spec"]
    pod["terminationGracePeriodSeconds"] = pod.get("terminationGracePeriodSeconds", 30) + 60
    return True


def expose_admin(docs):
    changed = False
    for ingress in each(docs, "Ingress"):
        ingress["spec"]["rules"][0]["http"]["paths"].append(
            {
                "path": "/admin/",
                "pathType": "Prefix",
                "backend": {"service": {"name": "presence-gateway", "port": {"name": "http"}}},
            }
        )
        changed = True
    for route in each(docs, "HTTPRoute"):
        route["spec"]["rules"][0]["matches"].append({"path": {"type": "PathPrefix", "value": "/"}})
        changed = True
    return changed


def drop_admin_service(docs):
    docs[:] = [d for d in docs if not (d["kind"] == "Service" and d["metadata"]["name"] == "presence-admin")]
    return True


def drop_board_routes(docs):
    """Removes the venue board's page and assets (/venues/, /board/) from every public entry."""
    board = ("/venues/", "/board/")
    changed = False
    for ingress in each(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            kept = [p for p in rule["http"]["paths"] if p["path"] not in board]
            changed |= len(kept) != len(rule["http"]["paths"])
            rule["http"]["paths"] = kept
    for route in each(docs, "HTTPRoute"):
        for rule in route["spec"]["rules"]:
            kept = [m for m in rule.get("matches", []) if m.get("path", {}).get("value") not in board]
            changed |= len(kept) != len(rule.get("matches", []))
            rule["matches"] = kept
    return changed


def tie_to_nginx(docs):
    for ingress in each(docs, "Ingress"):
        ingress["metadata"].setdefault("annotations", {})["nginx.ingress.kubernetes.io/proxy-body-size"] = "256m"
        return True
    return False


def drop_registry_scaling(docs):
    docs[:] = [d for d in docs if not (d["kind"] == "ScaledObject" and d["metadata"]["name"] == "presence-registry")]
    return True


def drop_alerts(docs, unwanted: Callable[[dict], bool]) -> bool:
    """Removes the alert rules `unwanted` picks; whether it found any."""
    removed = False
    for rule in each(docs, "PrometheusRule"):
        for group in rule["spec"]["groups"]:
            kept = [r for r in group["rules"] if not ("alert" in r and unwanted(r))]
            removed |= len(kept) != len(group["rules"])
            group["rules"] = kept
    return removed


def change_alerts(docs, change: Callable[[dict], bool]) -> bool:
    """Applies `change` to every alert rule; whether it changed any."""
    return any(
        [change(r) for rule in each(docs, "PrometheusRule") for g in rule["spec"]["groups"] for r in g["rules"]]
    )


def drop_registry_lag_alert(docs):
    return drop_alerts(docs, lambda rule: "registry-stats" in rule["expr"])


def drop_not_ready_alert(docs):
    return drop_alerts(docs, lambda rule: "kube_pod_status_ready" in rule["expr"])


def drop_broker_count_alert(docs):
    return drop_alerts(docs, lambda rule: "kafka_brokers" in rule["expr"])


def ignore_absent_broker_count(docs):
    """The cluster's broker alert without its `or absent(...)`: silent when no count is scraped."""

    def change(rule):
        expr = re.sub(r"\s*or\s+absent\(kafka_brokers\)\s*-\s*1", "", rule["expr"])
        changed, rule["expr"] = expr != rule["expr"], expr
        return changed

    return change_alerts(docs, change)


def drop_pod_broker_alert(docs):
    return drop_alerts(docs, lambda rule: "presence_kafka_client_brokers_up" in rule["expr"])


def slow_pod_broker_alert(docs):
    def change(rule):
        if "presence_kafka_client_brokers_up" not in rule["expr"]:
            return False
        rule["for"] = "10m"
        return True

    return change_alerts(docs, change)


def ignore_silent_pods(docs):
    """The pods' broker alert without the pods that report no figure."""

    def change(rule):
        expr = rule["expr"]
        if "presence_kafka_client_brokers_up" in expr:
            expr = re.split(r"\bor\b", expr, maxsplit=1)[0]
        changed, rule["expr"] = expr != rule["expr"], expr
        return changed

    return change_alerts(docs, change)


def strict_budgets(docs):
    for pdb in each(docs, "PodDisruptionBudget"):
        pdb["spec"].pop("unhealthyPodEvictionPolicy", None)
    return True


def drop_priority(docs):
    each(docs, "Deployment", "presence-validator")[0]["spec"]["template"]["spec"].pop("priorityClassName", None)
    return True


def hard_zone_spread(docs):
    pod = each(docs, "Deployment", "presence-gateway")[0]["spec"]["template"]["spec"]
    for constraint in pod["topologySpreadConstraints"]:
        if constraint["topologyKey"] == ZONE:
            constraint["whenUnsatisfiable"] = "DoNotSchedule"
            constraint.pop("nodeTaintsPolicy", None)
    return True


def starve_memory(docs):
    container_of(docs, "presence-gateway")["resources"]["requests"]["memory"] = "16Mi"
    return True


def hoard_memory(docs):
    container_of(docs, "presence-validator")["resources"]["requests"]["memory"] = "4Gi"
    return True


def drop_redis_egress(docs):
    """Removes every egress rule to the validator's Redis port."""
    redis = [
        port
        for what, _, port in endpoints(Rendered("", docs), container_of(docs, "presence-validator"))
        if what == "Redis"
    ]
    for policy in each(docs, "NetworkPolicy"):
        policy["spec"]["egress"] = [
            rule
            for rule in policy["spec"].get("egress", [])
            if not {p.get("port") for p in rule.get("ports", [])} & set(redis)
        ]
    return bool(redis)


def drop_external_kafka_egress(docs):
    """Removes the egress rules to Kafka outside the cluster (ipBlock peers on
    the brokers' port); finds nothing where Kafka is a cluster service."""
    kafka = {
        port
        for what, host, port in endpoints(Rendered("", docs), container_of(docs, "presence-validator"))
        if what == "Kafka" and not host.endswith((".svc", ".svc.cluster.local"))
    }
    removed = False
    for policy in each(docs, "NetworkPolicy"):
        rules = policy["spec"].get("egress", [])
        kept = [
            rule
            for rule in rules
            if not (
                {p.get("port") for p in rule.get("ports", [])} & kafka
                and any("ipBlock" in peer for peer in rule.get("to", []))
            )
        ]
        removed |= len(kept) != len(rules)
        if "egress" in policy["spec"]:
            policy["spec"]["egress"] = kept
    return removed


def drop_otlp_egress(docs):
    before = len(docs)
    docs[:] = [
        d
        for d in docs
        if not (
            d["kind"] == "NetworkPolicy"
            and any(p.get("port") == 4317 for r in d["spec"].get("egress", []) for p in r.get("ports", []))
        )
    ]
    return len(docs) != before


def password_in_env(docs):
    container_of(docs, "presence-validator").setdefault("env", []).append(
        {
            "name": "PRESENCE_KAFKA_SASL_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "presence-kafka", "key": "password"}},
        }
    )
    return True


def unmount_redis_password(docs):
    pod = each(docs, "Deployment", "presence-registry")[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["volumeMounts"] = [m for m in container.get("volumeMounts", []) if "redis" not in m["name"]]
    return True


def drop_keda_auth(docs):
    changed = False
    for scaled in each(docs, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            changed |= trigger.pop("authenticationRef", None) is not None
    return changed


def tag_image(docs):
    changed = False
    for deployment in each(docs, "Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        if DIGEST.search(container["image"]):
            container["image"] = DIGEST.sub(":0.1.0", container["image"])
            changed = True
    return changed


def drop_runbook_alert(docs):
    for rule in each(docs, "PrometheusRule"):
        for group in rule["spec"]["groups"]:
            group["rules"] = [r for r in group["rules"] if r.get("alert") != "PresenceKafkaBrokerUnreachable"]
    return True


@dataclass(frozen=True)
class Item:
    """One manifest item of the review: its check, and breakers that must make it fail."""

    what: str
    check: Callable[[Rendered, Problems], None]
    breakers: tuple[Callable[[list[dict]], bool], ...]
    # Checked on production renderings only (the development overlay is exempt).
    production_only: bool = False


def items(repo: Path, examples: list[dict], prefix: str, routes: set[tuple[str, str]]) -> list[Item]:
    docs = (repo / "docs/operations.md").read_text()
    measured = measured_memory(docs)
    shapes = {d["metadata"]["name"]: set(d.get("stringData", {})) for d in examples if d["kind"] == "Secret"}
    source = Source(repo)
    return [
        Item("preStop pause before SIGTERM", check_prestop, (drop_prestop,)),
        Item(
            "grace period covers pause, shutdown and margin",
            lambda r, p: check_grace(r, p, source),
            (lengthen_prestop, prolong_grace),
        ),
        Item("/admin/ off the public entry", check_admin_private, (expose_admin, drop_admin_service)),
        Item(
            "controller-neutral public entry routing what the Ingress routes",
            lambda r, p: check_public_entry(r, p, routes),
            (tie_to_nginx, drop_board_routes),
        ),
        Item(
            "registry scaled on its decisions lag, alerted",
            lambda r, p: check_registry_scaling(r, p, prefix),
            (drop_registry_scaling, drop_registry_lag_alert),
        ),
        Item(
            "broker and not-ready alerts",
            check_night_alerts,
            (
                drop_not_ready_alert,
                drop_broker_count_alert,
                ignore_absent_broker_count,
                drop_pod_broker_alert,
                slow_pod_broker_alert,
                ignore_silent_pods,
            ),
        ),
        Item("PDBs evict unhealthy pods", check_budgets, (strict_budgets,)),
        Item("scan path priority", check_priority, (drop_priority,)),
        Item("zone spread survives a lost zone", check_zone_spread, (hard_zone_spread,)),
        Item(
            "memory requests as measured",
            lambda r, p: check_memory_requests(r, p, measured),
            (starve_memory, hoard_memory),
            production_only=True,
        ),
        Item(
            "egress to every configured address",
            check_egress,
            (drop_redis_egress, drop_external_kafka_egress, drop_otlp_egress),
        ),
        Item(
            "credentials as mounted files",
            lambda r, p: check_secret_files(r, p, shapes),
            (password_in_env, unmount_redis_password),
        ),
        Item("KEDA authenticates to a secured Kafka", check_keda_auth, (drop_keda_auth,)),
        Item("production image pinned by digest", check_digest, (tag_image,), production_only=True),
        Item("runbooks name their alerts", lambda r, p: check_runbooks(docs, r, p), (drop_runbook_alert,)),
    ]


def query_logging_copies(examples: list[dict]) -> list[tuple[str, list[dict]]]:
    """Copies of the examples whose access log formats record the query string."""
    copies = []
    for breaks, into in (("$uri", "$request_uri"), ("%REQ_WITHOUT_QUERY(", "%REQ(")):
        bad = copy.deepcopy(examples)
        for doc in nginx_log_formats(bad):
            doc["data"]["log-format-upstream"] = doc["data"]["log-format-upstream"].replace(breaks, into)
        for log_format in envoy_log_formats(bad):
            log_format["json"] = {k: v.replace(breaks, into) for k, v in log_format.get("json", {}).items()}
        copies.append((f"{breaks} as {into}", bad))
    return copies


def ingress_routes(overlays: list[Rendered], problems: Problems) -> set[tuple[str, str]]:
    """What the production overlay's Ingress routes: every public entry must route the same."""
    production = [r for r in overlays if r.name == "overlays-production"]
    ingresses = production[0].of_kind("Ingress") if production else []
    problems.check(len(ingresses) == 1, "overlays-production", "no single Ingress to compare the public entries with")
    return public_paths(ingresses[0]) if ingresses else set()


def check_all(repo: Path, overlays: list[Rendered], examples: list[dict], prefix: str, problems: Problems) -> int:
    """Runs every item on every rendering, then on each broken copy, where it
    must fail; returns how many broken copies were rejected."""
    rejected = 0
    check_access_log(examples, problems)
    for what, bad in query_logging_copies(examples):
        caught = Problems()
        check_access_log(bad, caught)
        problems.check(bool(caught.items), "access log check", f"accepted formats with {what}")
        rejected += bool(caught.items)
    for item in items(repo, examples, prefix, ingress_routes(overlays, problems)):
        for rendered in overlays:
            item.check(rendered, problems)
        for breaker in item.breakers:
            applied = 0
            for rendered in overlays:
                if item.production_only and not is_production(rendered):
                    continue
                copy_ = broken(rendered, breaker)
                if copy_ is None:
                    continue
                applied += 1
                caught = Problems()
                item.check(copy_, caught)
                problems.check(
                    bool(caught.items),
                    f"{item.what} check",
                    f"accepted {rendered.name} broken by {breaker.__name__}",
                )
                rejected += bool(caught.items)
            problems.check(applied > 0, f"{item.what} check", f"{breaker.__name__} found nothing to break")
    return rejected
