"""Checks the objects `kubectl kustomize` rendered from one overlay of deploy/kubernetes, offline.

    check_deploy.py RENDERED.yaml OUTDIR

Run by scripts/check-deploy.sh with .venv-deploy's Python. It fails (exit 1, every problem
listed) unless:
- every object validates against the Kubernetes 1.37 schemas, strictly (no unknown field);
  the one kind Kubernetes has no schema for, the Prometheus Operator's ServiceMonitor, is
  checked for the fields its operator needs;
- every ConfigMap and Secret a pod uses (volume, env, envFrom) is rendered, with the key used,
  and a ConfigMap with an app.kubernetes.io/instance label is used only by that instance;
- every Service selects the pods of some workload, and no bootstrap Job pod;
- each Redis Cluster bootstrap Job names, in REDIS_SERVICE, a headless Service publishing
  not-ready pods, which is the serviceName of exactly one StatefulSet whose replicas equal
  REDIS_CLUSTER_SIZE;
- respgate's config file is the ConfigMap key the Deployment mounts and passes to --config,
  and every seed and sentinel in it names a pod of a rendered StatefulSet (POD.SERVICE:PORT,
  ordinal below its replicas, a port its Service has).
It writes what later steps run for real into OUTDIR:
- respgate.toml and respgate.env (the respgate container's environment as Kubernetes would
  give it: Secrets and ConfigMaps read, downward API fields given test values, $(VAR)
  expanded; one NAME=VALUE a line) for `respgate --check-config`;
- configmaps/NAME/KEY for every key of every ConfigMap (redis.conf, start.sh, bootstrap.sh ...),
  so that the Redis checks run the scripts and configs exactly as rendered.
"""

import base64
import re
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.37.0"
# What the downward API would give, for --check-config (nothing dials these).
FIELD_VALUES = {
    "status.podIP": "192.0.2.10",
    "status.hostIP": "192.0.2.20",
    "metadata.name": "respgate-0",
    "metadata.namespace": "default",
}
INSTANCE = "app.kubernetes.io/instance"
WORKLOADS = {"Deployment", "StatefulSet", "Job", "DaemonSet"}

problems = []


def problem(obj, message):
    problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {message}")


def check_service_monitor(obj):
    spec = obj.get("spec", {})
    if not spec.get("selector", {}).get("matchLabels"):
        problem(obj, "spec.selector.matchLabels is missing")
    endpoints = spec.get("endpoints") or []
    if not endpoints or not all(e.get("port") for e in endpoints):
        problem(obj, "every spec.endpoints[] needs a named port")


def validate(obj):
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        if obj["kind"] == "ServiceMonitor" and obj["apiVersion"] == "monitoring.coreos.com/v1":
            check_service_monitor(obj)
        else:
            problem(obj, f"no Kubernetes {KUBERNETES_VERSION} schema for {obj['apiVersion']}")
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        problem(obj, f"invalid at {path or '(top)'}: {e.message}")


def pod_spec(obj):
    if obj["kind"] in WORKLOADS:
        return obj["spec"]["template"]["spec"]
    return None


def pod_labels(obj):
    return obj["spec"]["template"].get("metadata", {}).get("labels", {})


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def main():
    rendered, outdir = Path(sys.argv[1]), Path(sys.argv[2])
    objects = [o for o in yaml.safe_load_all(rendered.read_text()) if o]
    by_kind = {}
    for obj in objects:
        validate(obj)
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    config_maps = by_kind.get("ConfigMap", {})
    secrets = {
        name: {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
        for name, s in by_kind.get("Secret", {}).items()
    }
    stores = {"configMap": {n: c.get("data", {}) for n, c in config_maps.items()}, "secret": secrets}

    def lookup(obj, kind, name, key=None):
        data = stores[kind].get(name)
        # A Redis instance's workloads use its own ConfigMaps, not another instance's.
        instance = obj["metadata"].get("labels", {}).get(INSTANCE)
        theirs = config_maps.get(name, {}).get("metadata", {}).get("labels", {}).get(INSTANCE)
        if kind == "configMap" and instance and theirs and instance != theirs:
            problem(obj, f"uses ConfigMap {name} of another instance ({theirs})")
        if data is None:
            problem(obj, f"uses {kind} {name}, which is not rendered")
        elif key is not None and key not in data:
            problem(obj, f"uses key {key} of {kind} {name}, which has no such key")
        else:
            return data if key is None else data[key]
        return None

    workloads = [o for o in objects if o["kind"] in WORKLOADS]
    for obj in workloads:
        spec = pod_spec(obj)
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                lookup(obj, "configMap", volume["configMap"]["name"])
            if "secret" in volume:
                lookup(obj, "secret", volume["secret"]["secretName"])
        for container in spec["containers"]:
            for e in container.get("env", []):
                source = e.get("valueFrom", {})
                for kind, ref in (("configMap", "configMapKeyRef"), ("secret", "secretKeyRef")):
                    if ref in source:
                        lookup(obj, kind, source[ref]["name"], source[ref]["key"])
            for source in container.get("envFrom", []):
                for kind, ref in (("configMap", "configMapRef"), ("secret", "secretRef")):
                    if ref in source:
                        lookup(obj, kind, source[ref]["name"])

    services = by_kind.get("Service", {})
    stateful_sets = by_kind.get("StatefulSet", {})
    for service in services.values():
        selector = service["spec"].get("selector", {})
        chosen = [w for w in workloads if selects(selector, pod_labels(w))]
        if not chosen:
            problem(service, f"selector {selector} matches no workload's pods")
        if any(w["kind"] == "Job" for w in chosen):
            problem(service, f"selector {selector} matches a Job's pods")

    for job in by_kind.get("Job", {}).values():
        env = env_of(pod_spec(job)["containers"][0])
        if "REDIS_SERVICE" not in env:
            continue
        name = env["REDIS_SERVICE"].get("value")
        service = services.get(name)
        if service is None:
            problem(job, f"REDIS_SERVICE {name!r} is not a rendered Service")
            continue
        if service["spec"].get("clusterIP") != "None" or not service["spec"].get(
            "publishNotReadyAddresses"
        ):
            problem(job, f"Service {name} must be headless and publish not-ready pods")
        owners = [s for s in stateful_sets.values() if s["spec"]["serviceName"] == name]
        if len(owners) != 1:
            problem(job, f"Service {name} is the serviceName of {len(owners)} StatefulSets, not 1")
            continue
        replicas = owners[0]["spec"]["replicas"]
        if env.get("REDIS_CLUSTER_SIZE", {}).get("value") != str(replicas):
            problem(job, f"REDIS_CLUSTER_SIZE must be {replicas}, the StatefulSet's replicas")

    def check_pod_address(obj, key, address):
        host, _, port = address.rpartition(":")
        pod, _, service_name = host.partition(".")
        set_name, _, ordinal = pod.rpartition("-")
        stateful_set = stateful_sets.get(set_name)
        service = services.get(service_name)
        if (
            stateful_set is None
            or service is None
            or stateful_set["spec"]["serviceName"] != service_name
            or not ordinal.isdigit()
            or int(ordinal) >= stateful_set["spec"]["replicas"]
        ):
            problem(obj, f"{key} {address!r} is not POD.SERVICE:PORT of a rendered StatefulSet")
        elif int(port) not in [p["port"] for p in service["spec"]["ports"]]:
            problem(obj, f"{key} {address!r}: Service {service_name} has no port {port}")

    deployment = by_kind.get("Deployment", {}).get("respgate")
    if deployment is None:
        problems.append("no Deployment named respgate")
    else:
        write_respgate(deployment, lookup, check_pod_address, outdir)

    for name, data in stores["configMap"].items():
        for key, value in data.items():
            path = outdir / "configmaps" / name / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value)

    if problems:
        print(f"{rendered}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        sys.exit(1)
    print(f"{rendered}: {len(objects)} objects valid for Kubernetes {KUBERNETES_VERSION}")


def write_respgate(deployment, lookup, check_pod_address, outdir):
    spec = pod_spec(deployment)
    container = spec["containers"][0]
    args = container.get("args", [])
    if "--config" not in args or args.index("--config") + 1 >= len(args):
        problem(deployment, "respgate is not given --config FILE")
        return
    config_path = Path(args[args.index("--config") + 1])
    mount = next(
        (m for m in container.get("volumeMounts", []) if m["mountPath"] == str(config_path.parent)),
        None,
    )
    volume = mount and next((v for v in spec["volumes"] if v["name"] == mount["name"]), None)
    if not volume or "configMap" not in volume:
        problem(deployment, f"{config_path.parent} is not a ConfigMap volume")
        return
    text = lookup(deployment, "configMap", volume["configMap"]["name"], config_path.name)
    if text is None:
        return
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "respgate.toml").write_text(text)

    config = tomllib.loads(text)
    for section in ("backends", "clusters"):
        for name, backend in config.get(section, {}).items():
            for key in ("seeds", "sentinels"):
                for address in backend.get(key, []):
                    check_pod_address(deployment, f"{section}.{name}.{key}", address)

    values = {}
    for e in container.get("env", []):
        source = e.get("valueFrom")
        if source is None:
            # Kubernetes expands $(NAME) from variables defined earlier in the list.
            value = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: values.get(m.group(1), m.group(0)),
                e.get("value", ""),
            )
            if "$(" in value:
                problem(deployment, f"env {e['name']}: {value!r} names an undefined variable")
        elif "fieldRef" in source:
            value = FIELD_VALUES[source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            value = lookup(deployment, "secret", ref["name"], ref["key"]) or ""
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            value = lookup(deployment, "configMap", ref["name"], ref["key"]) or ""
        else:
            problem(deployment, f"env {e['name']}: unexpected source {source}")
            continue
        if "\n" in value:
            problem(deployment, f"env {e['name']} has a newline")
        values[e["name"]] = value
    (outdir / "respgate.env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))


if __name__ == "__main__":
    main()
