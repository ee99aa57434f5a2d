"""Checks that the Kubernetes manifests in a folder agree with each other, which their
schemas cannot say: selectors select the Deployment's pods, named ports and Secret keys
exist, the migrate Job runs the Deployment's image, and the termination grace period
covers the preStop pause plus the server's drain (FINETUNE_DRAIN_SECONDS).

Usage: python k8s_consistency.py DIR   (exit 1 with one line per problem)
"""

import pathlib
import sys

import yaml

DEFAULT_DRAIN_SECONDS = 10  # finetune serve's default for --drain-seconds (src/config.rs)


def load(folder):
    docs = []
    for path in sorted(pathlib.Path(folder).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def one(docs, kind):
    found = [(name, d) for name, d in docs if d.get("kind") == kind]
    if len(found) != 1:
        raise SystemExit(f"expected one {kind}, found {len(found)}")
    return found[0]


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def env_value(container, name):
    for e in container.get("env", []):
        if e["name"] == name:
            return e.get("value")
    return None


def check(docs):
    problems = []
    dep_file, dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    server = spec["containers"][0]
    ports = {p["name"] for p in server.get("ports", [])}

    if not selects(dep["spec"]["selector"]["matchLabels"], labels):
        problems.append(f"{dep_file}: the selector does not select the pod template's labels")
    for kind in ("Service", "PodDisruptionBudget"):
        name, doc = one(docs, kind)
        selector = doc["spec"]["selector"]
        # A Service selects by plain labels; a PodDisruptionBudget by a label selector.
        if not selects(selector.get("matchLabels", selector), labels):
            problems.append(f"{name}: the {kind}'s selector does not select the Deployment's pods")
    svc_file, svc = one(docs, "Service")
    for p in svc["spec"]["ports"]:
        if isinstance(p.get("targetPort"), str) and p["targetPort"] not in ports:
            problems.append(f"{svc_file}: targetPort {p['targetPort']} is not a port of the container")
    for term in spec.get("affinity", {}).get("podAntiAffinity", {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution", []
    ):
        if not selects(term["labelSelector"]["matchLabels"], labels):
            problems.append(f"{dep_file}: the anti-affinity does not select the replicas")

    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        handler = server.get(probe, {})
        port = (handler.get("httpGet") or handler.get("tcpSocket") or handler.get("grpc") or {}).get("port")
        if port is None:
            problems.append(f"{dep_file}: the server has no {probe}")
        elif isinstance(port, str) and port not in ports:
            problems.append(f"{dep_file}: {probe} names port {port}, which the container does not have")

    secret_file, secret = one(docs, "Secret")
    keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    job_file, job = one(docs, "Job")
    for name, container in ((dep_file, server), (job_file, job["spec"]["template"]["spec"]["containers"][0])):
        for e in container.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["name"] == secret["metadata"]["name"] and ref["key"] not in keys:
                problems.append(f"{name}: {e['name']} reads key {ref['key']}, which {secret_file} lacks")
    for volume in spec.get("volumes", []):
        for item in volume.get("secret", {}).get("items", []):
            if item["key"] not in keys:
                problems.append(f"{dep_file}: volume {volume['name']} reads key {item['key']}, which {secret_file} lacks")

    if job["spec"]["template"]["spec"]["containers"][0]["image"] != server["image"]:
        problems.append(f"{job_file}: the migrate Job must run the Deployment's image ({server['image']})")

    drain = int(env_value(server, "FINETUNE_DRAIN_SECONDS") or DEFAULT_DRAIN_SECONDS)
    command = server.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pause = int(command[-1]) if command[:1] == ["/bin/sleep"] else 0
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace <= pause + drain:
        problems.append(
            f"{dep_file}: terminationGracePeriodSeconds {grace} must exceed the preStop pause "
            f"({pause} s) plus FINETUNE_DRAIN_SECONDS ({drain} s), or Kubernetes kills the drain"
        )
    return problems


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    problems = check(load(sys.argv[1]))
    for p in problems:
        print(f"k8s consistency: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"{sys.argv[1]}: manifests consistent")


if __name__ == "__main__":
    main()
