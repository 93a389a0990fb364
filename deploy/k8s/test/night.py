"""The event-night checks of the rendered manifests (an SRE's review: draining,
what the public entry exposes, scaling the registry, alerts, budgets, priority,
zones, memory, egress, secrets, KEDA's credentials, image pinning, ingress
neutrality, runbooks), each with a breaker: a function that returns a broken
copy of a rendering (or None where the item does not apply to it). check_all
runs every check on every rendering, then on every broken copy, where it must
fail: a check that passes a broken copy proves nothing."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from manifests import Problems, Rendered, container_env, describe, port_of

# The scan path's Deployments: scanners wait on each (a decision, a device call).
SCAN_PATH = ("presence-gateway", "presence-validator", "presence-registry")
ZONE = "topology.kubernetes.io/zone"
# Margin the kubelet's grace keeps beyond the pause and the service's own shutdown.
GRACE_MARGIN_SECONDS = 10
# The shortest preStop pause that outlasts endpoint propagation (kube-proxy,
# ingress controllers sync within a few seconds).
MIN_PRESTOP_SECONDS = 5
# nginx variables that carry the query string (and so the `apikey` parameter).
QUERY_VARIABLES = re.compile(r"\$(request|request_uri|args|query_string|arg_apikey)\b")
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


def alert_expressions(rendered: Rendered) -> dict[str, str]:
    return {
        rule["alert"]: rule["expr"]
        for doc in rendered.of_kind("PrometheusRule")
        for group in doc["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


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


def check_public_entry(rendered: Rendered, problems: Problems) -> None:
    """The scanners' way in is controller-neutral: an Ingress with no controller's
    annotations, or a Gateway API HTTPRoute."""
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
        text = repr(entry["spec"])
        problems.check("/presence/" in text, f"{rendered.name} {describe(entry)}", "does not route /presence/")


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
        any(f'consumergroup="{prefix}registry-stats"' in expr for expr in alert_expressions(rendered).values()),
        rendered.name,
        "no alert watches the registry's decisions lag",
    )


def check_night_alerts(rendered: Rendered, problems: Problems) -> None:
    """Alerts for an unreachable broker and for gateways up but not ready
    (alerts.test.yaml proves they fire)."""
    exprs = alert_expressions(rendered).values()
    problems.check(any("kafka_brokers" in e for e in exprs), rendered.name, "no alert for an unreachable broker")
    problems.check(
        any("kube_pod_status_ready" in e and "presence-gateway" in e for e in exprs),
        rendered.name,
        "no alert for gateways that run but are not ready",
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


def check_access_log(examples: list[dict], problems: Problems) -> None:
    """The controller access log example logs the path, never the query string."""
    formats = [
        doc["data"]["log-format-upstream"]
        for doc in examples
        if doc["kind"] == "ConfigMap" and "log-format-upstream" in doc.get("data", {})
    ]
    problems.check(bool(formats), "examples", "no access log format for the ingress controller")
    for text in formats:
        problems.check("$uri" in text, "examples access log", "does not log the path ($uri)")
        for variable in QUERY_VARIABLES.findall(text):
            problems.check(False, "examples access log", f"${variable} would record the apikey query parameter")


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


def tie_to_nginx(docs):
    for ingress in each(docs, "Ingress"):
        ingress["metadata"].setdefault("annotations", {})["nginx.ingress.kubernetes.io/proxy-body-size"] = "256m"
        return True
    return False


def drop_registry_scaling(docs):
    docs[:] = [d for d in docs if not (d["kind"] == "ScaledObject" and d["metadata"]["name"] == "presence-registry")]
    return True


def drop_night_alerts(docs):
    for rule in each(docs, "PrometheusRule"):
        for group in rule["spec"]["groups"]:
            group["rules"] = [r for r in group["rules"] if "kube_pod_status_ready" not in r.get("expr", "")]
    return True


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


def items(repo: Path, examples: list[dict], prefix: str) -> list[Item]:
    docs = (repo / "docs/operations.md").read_text()
    measured = measured_memory(docs)
    shapes = {d["metadata"]["name"]: set(d.get("stringData", {})) for d in examples if d["kind"] == "Secret"}
    return [
        Item("preStop pause before SIGTERM", check_prestop, (drop_prestop,)),
        Item("/admin/ off the public entry", check_admin_private, (expose_admin,)),
        Item("controller-neutral public entry", check_public_entry, (tie_to_nginx,)),
        Item(
            "registry scaled on its decisions lag, alerted",
            lambda r, p: check_registry_scaling(r, p, prefix),
            (drop_registry_scaling,),
        ),
        Item("broker and not-ready alerts", check_night_alerts, (drop_night_alerts,)),
        Item("PDBs evict unhealthy pods", check_budgets, (strict_budgets,)),
        Item("scan path priority", check_priority, (drop_priority,)),
        Item("zone spread survives a lost zone", check_zone_spread, (hard_zone_spread,)),
        Item(
            "memory requests as measured",
            lambda r, p: check_memory_requests(r, p, measured),
            (starve_memory,),
            production_only=True,
        ),
        Item("egress to every configured address", check_egress, (drop_redis_egress, drop_otlp_egress)),
        Item(
            "credentials as mounted files",
            lambda r, p: check_secret_files(r, p, shapes),
            (password_in_env, unmount_redis_password),
        ),
        Item("KEDA authenticates to a secured Kafka", check_keda_auth, (drop_keda_auth,)),
        Item("production image pinned by digest", check_digest, (tag_image,), production_only=True),
        Item("runbooks name their alerts", lambda r, p: check_runbooks(docs, r, p), (drop_runbook_alert,)),
    ]


def check_all(repo: Path, overlays: list[Rendered], examples: list[dict], prefix: str, problems: Problems) -> int:
    """Runs every item on every rendering, then on each broken copy, where it
    must fail; returns how many broken copies were rejected."""
    rejected = 0
    check_access_log(examples, problems)
    for example in examples:
        if example["kind"] == "ConfigMap" and "log-format-upstream" in example.get("data", {}):
            bad = copy.deepcopy(example)
            bad["data"]["log-format-upstream"] = bad["data"]["log-format-upstream"].replace("$uri", "$request_uri")
            caught = Problems()
            check_access_log([bad], caught)
            problems.check(bool(caught.items), "access log check", "accepted a format logging $request_uri")
            rejected += bool(caught.items)
    for item in items(repo, examples, prefix):
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
