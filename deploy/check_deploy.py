#!/usr/bin/env python3
"""check_deploy.py - static checks of deploy/: every YAML and JSON parses, compose and Kubernetes
manifests have the fields the deployment relies on (and agree with each other: labels, ports,
volume names), the PrometheusRule carries exactly deploy/prometheus/alerts.yml, and every
expertd_* name that the dashboard, alerts, HPA and adapter rules use is a metric the server
exports (--metrics FILE: a /metrics scrape of a running server, taken by deploy/check.sh).

    python3 deploy/check_deploy.py [--metrics FILE] [--regen]

--regen rewrites deploy/k8s/prometheusrule.yaml from alerts.yml. Needs PyYAML only. Not here:
schema validation against the Kubernetes OpenAPI (kubeconform is not packaged for Debian) and
promtool (deploy/check.sh runs it).
"""
import argparse
import json
import pathlib
import re
import sys

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
K8S = DEPLOY / "k8s"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "expertd.json"
RULE_HEADER = """# The alert rules of deploy/prometheus/alerts.yml for the Prometheus Operator. Generated from
# that file; deploy/check.sh fails when the two differ (edit alerts.yml, then regenerate with
# `python3 deploy/check_deploy.py --regen`).
"""

errors = []


def fail(where, msg):
    errors.append(f"{where}: {msg}")


def need(where, obj, path):
    """obj at the dotted path, or None after recording an error."""
    cur = obj
    for key in path.split("."):
        if not isinstance(cur, dict) or key not in cur:
            fail(where, f"missing {path}")
            return None
        cur = cur[key]
    return cur


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, s):
    style = "|" if "\n" in s else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)


_Dumper.add_representer(str, _str)


def prometheus_rule_text():
    doc = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
           "metadata": {"name": "expertd",
                        "labels": {"app.kubernetes.io/name": "expertd",
                                   "release": "kube-prometheus-stack"}},
           "spec": yaml.safe_load(ALERTS.read_text())}
    return RULE_HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000)


# ---- parse everything ---------------------------------------------------------------------
def load_all():
    docs = {}
    for p in sorted(DEPLOY.rglob("*.y*ml")):
        try:
            docs[p] = [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
        except yaml.YAMLError as e:
            fail(p.relative_to(DEPLOY), f"YAML: {e}")
    try:
        dash = json.loads(DASHBOARD.read_text())
    except (OSError, json.JSONDecodeError) as e:
        fail("dashboard", str(e))
        dash = {}
    return docs, dash


# ---- compose --------------------------------------------------------------------------------
def check_compose(doc):
    w = "compose.yaml"
    svcs = need(w, doc, "services") or {}
    for name in ("expertd", "expertd-cpu", "prometheus", "grafana"):
        if name not in svcs:
            fail(w, f"no service {name}")
    gpu = svcs.get("expertd", {})
    devs = (((gpu.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    if not any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devs):
        fail(w, "expertd: no nvidia GPU reservation")
    if gpu.get("profiles") != ["gpu"] or svcs.get("expertd-cpu", {}).get("profiles") != ["cpu"]:
        fail(w, "expertd / expertd-cpu must be in the gpu / cpu profiles")
    aliases = ((svcs.get("expertd-cpu", {}).get("networks") or {}).get("default") or {}).get("aliases", [])
    if "expertd" not in aliases:
        fail(w, "expertd-cpu must answer to the name expertd (Prometheus' target)")
    for name in ("expertd", "expertd-cpu"):
        s = svcs.get(name, {})
        df = (s.get("build") or {}).get("dockerfile", "")
        if not (DEPLOY.parent / df).is_file():
            fail(w, f"{name}: dockerfile {df!r} does not exist")
        mounts = [re.sub(r"\$\{[^}]*\}", "x", v).split(":")[1] for v in s.get("volumes", [])]
        if mounts[:2] != ["/models", "/store"]:
            fail(w, f"{name}: volumes must mount /models and /store, got {mounts}")
    # every bind-mounted folder of ours exists
    for name, s in svcs.items():
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("./") and name in ("prometheus", "grafana") and not (DEPLOY / src).is_dir():
                fail(w, f"{name}: {src} does not exist")


# ---- Kubernetes -----------------------------------------------------------------------------
def check_k8s(docs):
    objs = {}
    for p, ds in docs.items():
        if p.parent != K8S or p.name == "prometheus-adapter-values.yaml":
            continue
        for d in ds:
            w = f"k8s/{p.name}"
            for f in ("apiVersion", "kind") + (() if d.get("kind") == "Kustomization" else ("metadata.name",)):
                need(w, d, f)
            objs[(d.get("kind"), (d.get("metadata") or {}).get("name"))] = (w, d)
    kust = objs.get(("Kustomization", None))
    listed = set((kust[1] if kust else {}).get("resources", []))
    on_disk = {p.name for p in docs if p.parent == K8S} - {"kustomization.yaml", "prometheus-adapter-values.yaml"}
    if listed != on_disk:
        fail("k8s/kustomization.yaml", f"resources {sorted(listed)} != files {sorted(on_disk)}")

    w, dep = objs.get(("Deployment", "expertd"), ("k8s", None))
    if dep is None:
        fail("k8s", "no Deployment expertd")
        return
    sel = need(w, dep, "spec.selector.matchLabels") or {}
    pod_labels = need(w, dep, "spec.template.metadata.labels") or {}
    if not sel or any(pod_labels.get(k) != v for k, v in sel.items()):
        fail(w, "selector does not match the pod template's labels")
    pod = need(w, dep, "spec.template.spec") or {}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    ctrs = pod.get("containers", [])
    if len(ctrs) != 1:
        fail(w, "expected one container")
        return
    c = ctrs[0]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if ports.get("http") != 8080:
        fail(w, "container port http must be 8080 (the image's EXPOSE)")
    lim = need(w, c, "resources.limits") or {}
    if "nvidia.com/gpu" not in lim:
        fail(w, "no nvidia.com/gpu limit")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        g = (c.get(probe) or {}).get("httpGet") or {}
        if g.get("path") != "/health" or g.get("port") not in ("http", 8080):
            fail(w, f"{probe} must GET /health on the http port")
    for ctr in ctrs + pod.get("initContainers", []):
        for m in ctr.get("volumeMounts", []):
            if m["name"] not in volumes:
                fail(w, f"{ctr['name']}: volumeMount {m['name']} has no volume")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    if "persistentVolumeClaim" not in volumes.get(mounts.get("/models"), {}):
        fail(w, "/models must be a PVC")
    store = volumes.get(mounts.get("/store"), {})
    if "hostPath" not in store and "persistentVolumeClaim" not in store:
        fail(w, "/store must be node-local (hostPath or a local PV claim)")
    claim = volumes.get(mounts.get("/models"), {}).get("persistentVolumeClaim", {}).get("claimName")
    if claim and ("PersistentVolumeClaim", claim) not in objs:
        fail(w, f"PVC {claim} is not defined")
    env = {e["name"] for e in c.get("env", [])}
    if "EXPERTD_MODEL" not in env:
        fail(w, "EXPERTD_MODEL not set")
    sc = pod.get("securityContext", {})
    if not sc.get("runAsNonRoot"):
        fail(w, "pod must run as non-root")

    w, svc = objs.get(("Service", "expertd"), ("k8s", None))
    if svc is None:
        fail("k8s", "no Service expertd")
    else:
        ssel = need(w, svc, "spec.selector") or {}
        if any(pod_labels.get(k) != v for k, v in ssel.items()):
            fail(w, "selector does not match the Deployment's pods")
        sports = (svc.get("spec") or {}).get("ports", [])
        if not any(p.get("targetPort") in ("http", 8080) and p.get("name") == "http" for p in sports):
            fail(w, "needs a port named http targeting the container's http port")
        svc_labels = (svc.get("metadata") or {}).get("labels", {})
        w2, sm = objs.get(("ServiceMonitor", "expertd"), ("k8s", None))
        if sm is None:
            fail("k8s", "no ServiceMonitor expertd")
        else:
            msel = need(w2, sm, "spec.selector.matchLabels") or {}
            if any(svc_labels.get(k) != v for k, v in msel.items()):
                fail(w2, "selector does not match the Service's labels")
            eps = (sm.get("spec") or {}).get("endpoints", [])
            if not any(e.get("port") == "http" and e.get("path") == "/metrics" for e in eps):
                fail(w2, "needs an endpoint on port http, path /metrics")

    w, hpa = objs.get(("HorizontalPodAutoscaler", "expertd"), ("k8s", None))
    if hpa is None:
        fail("k8s", "no HorizontalPodAutoscaler expertd")
    else:
        ref = need(w, hpa, "spec.scaleTargetRef") or {}
        if ref.get("kind") != "Deployment" or ref.get("name") != "expertd":
            fail(w, "scaleTargetRef must be Deployment expertd")
        if hpa.get("apiVersion") != "autoscaling/v2":
            fail(w, "use autoscaling/v2")
        names = [m["pods"]["metric"]["name"] for m in (hpa.get("spec") or {}).get("metrics", [])
                 if m.get("type") == "Pods"]
        adapter = yaml.safe_load((K8S / "prometheus-adapter-values.yaml").read_text())
        served = {r["name"]["as"] for r in adapter["rules"]["custom"]}
        for n in names:
            if n not in served:
                fail(w, f"metric {n} is not served by a prometheus-adapter rule")
        if not names:
            fail(w, "no Pods metric")

    w, rule = objs.get(("PrometheusRule", "expertd"), ("k8s", None))
    if rule is None:
        fail("k8s", "no PrometheusRule expertd")
    elif rule.get("spec") != yaml.safe_load(ALERTS.read_text()):
        fail(w, "differs from prometheus/alerts.yml: run python3 deploy/check_deploy.py --regen")


# ---- Grafana ------------------------------------------------------------------------------
def check_grafana(docs, dash):
    ds = docs.get(DEPLOY / "grafana/provisioning/datasources/prometheus.yaml", [{}])[0]
    uids = {d.get("uid") for d in ds.get("datasources", [])}
    prov = docs.get(DEPLOY / "grafana/provisioning/dashboards/expertd.yaml", [{}])[0]
    if not prov.get("providers"):
        fail("grafana", "no dashboard provider")
    n_targets = 0
    for p in dash.get("panels", []):
        if p.get("type") == "row":
            continue
        if (p.get("datasource") or {}).get("uid") not in uids:
            fail("dashboard", f"panel {p.get('title')!r}: datasource is not the provisioned one")
        for t in p.get("targets", []):
            n_targets += 1
            if not t.get("expr"):
                fail("dashboard", f"panel {p.get('title')!r}: target without expr")
    if n_targets < 10:
        fail("dashboard", f"only {n_targets} queries")
    if dash.get("uid") != "expertd":
        fail("dashboard", "uid must be expertd")


# ---- metric names -------------------------------------------------------------------------
NAME = re.compile(r"\bexpertd_[a-z0-9_]+")


def referenced_names(dash):
    """name -> set of files that use it."""
    out = {}
    texts = {"dashboard": json.dumps(dash), "alerts.yml": ALERTS.read_text()}
    adapter = yaml.safe_load((K8S / "prometheus-adapter-values.yaml").read_text())
    texts["prometheus-adapter-values.yaml"] = " ".join(
        r["seriesQuery"] + " " + r["name"]["as"] for r in adapter["rules"]["custom"])
    hpa = yaml.safe_load((K8S / "hpa.yaml").read_text())
    texts["hpa.yaml"] = " ".join(m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"])
    for where, text in texts.items():
        for n in NAME.findall(text):
            out.setdefault(n, set()).add(where)
    return out


def exported_names(metrics_text):
    fams = {}
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(None, 3)
            fams[name] = typ
    names = set()
    for name, typ in fams.items():
        names.add(name)
        if typ == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names


def check_names(dash, metrics_file):
    text = pathlib.Path(metrics_file).read_text()
    exported = exported_names(text)
    if not exported:
        fail(metrics_file, "no metric families (# TYPE lines)")
        return
    used = referenced_names(dash)
    for n, where in sorted(used.items()):
        if n not in exported:
            fail("metric names", f"{n} (used in {', '.join(sorted(where))}) is not exported by the server")
    if not any(e.startswith("metric names") for e in errors):
        print(f"check_deploy: {len(used)} metric names used, all among the {len(exported)} the server exports")
    fams = {n for n in exported if not n.endswith(("_bucket", "_sum", "_count"))}
    unused = sorted(n for n in fams if n not in used and not any(u.startswith(n) for u in used))
    if unused:
        print("check_deploy: exported but not on the dashboard: " + ", ".join(unused))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--metrics", help="a /metrics scrape to compare metric names with")
    ap.add_argument("--regen", action="store_true", help="rewrite k8s/prometheusrule.yaml")
    a = ap.parse_args()
    if a.regen:
        (K8S / "prometheusrule.yaml").write_text(prometheus_rule_text())
        print("check_deploy: wrote deploy/k8s/prometheusrule.yaml")
    docs, dash = load_all()
    compose = docs.get(DEPLOY / "compose.yaml")
    if compose:
        check_compose(compose[0])
    else:
        fail("compose.yaml", "missing or empty")
    check_k8s(docs)
    check_grafana(docs, dash)
    if a.metrics:
        check_names(dash, a.metrics)
    for e in errors:
        print("check_deploy: FAIL " + e, file=sys.stderr)
    n_files = len(docs) + 1
    print(f"check_deploy: {n_files} files parsed, {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
