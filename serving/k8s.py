"""Kubernetes manifests for an exported repository: ``zoo export NAMES --out REPO --k8s DIR``.

What :func:`write_manifests` writes (walked through in ``docs/DEPLOY.md``):

- ``deployment.yaml``: N pods, each running ``zoo serve`` on the repository: tritonserver (gRPC 8001, HTTP
  8000, metrics 8002) under the model supervisor, zoo's ``/health`` (8003) and the OpenAI-compatible API
  (8080). Startup and liveness probes on Triton's ``/v2/health/ready`` and ``/v2/health/live``; readiness on
  zoo's ``/health``, which is ready only when Triton is and the supervisor has every model ready (a model
  being restarted takes the pod out of the Service until it is back). ``/dev/shm`` is a memory-backed
  ``emptyDir`` (the python backend moves tensors through shared memory; a container's default 64 MiB is too
  small). The repository comes from an init container that runs the same ``zoo export`` in the same image
  into an ``emptyDir`` (``repository="init"``), or from a PersistentVolumeClaim (``"pvc:NAME"``).
  ``--instance-kind gpu`` gives the GPU variant: one ``nvidia.com/gpu`` per pod and the GPU toleration.
  The pod runs as a non-root user with a read-only root file system, no capabilities and no privilege
  escalation; it never starts without its two secrets: ``zoo-api-key`` (the door's bearer key) and
  ``zoo-admin-key`` (Triton's admin APIs, see :mod:`serving.server`).
- ``service.yaml``: a ClusterIP Service publishing what may be reached from the cluster: the OpenAI-compatible
  API, gRPC inference (the admin APIs on it need the admin key) and ``/health``; and a headless Service
  (gRPC) whose DNS name resolves to every ready pod, for clients that spread their own requests
  (``TritonEmbedder("zoo-replicas:8001")``). Triton's HTTP port (the kubelet's probes) and metrics
  (Prometheus scrapes pods) are not published.
- ``networkpolicy.yaml``: ingress to the pods only on the published ports, plus metrics from pods labelled
  as Prometheus.
- ``hpa.yaml``: a HorizontalPodAutoscaler on three Pods metrics served by the Prometheus adapter with the rules
  in ``prometheus-adapter-rules.yaml``: the mean Triton queue time per request, and the door's own signals (its
  requests in flight and its 429s per second, from its ``/metrics``); and a PodDisruptionBudget. The door's
  metrics are scraped through the ``zoo`` Service's ``prometheus.io/*`` annotations (its port is published).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoo.errors import InvalidArgumentError

APP = "embedding-zoo"
PORTS = {"grpc": 8001, "http": 8000, "metrics": 8002, "health": 8003, "openai": 8080}
PUBLISHED = ("openai", "grpc", "health")  # what the Services publish; http (probes) and metrics (scrapes) are not
USER = 10001  # the non-root user the pod runs as
SECRETS = {"ZOO_API_KEY": "zoo-api-key", "ZOO_TRITON_ADMIN_KEY": "zoo-admin-key"}  # variable → Secret (key "key")
QUEUE_METRIC = "zoo_queue_us_per_request"  # what the adapter rules below expose to the HPA
IN_FLIGHT_METRIC = "zoo_door_in_flight"
REFUSED_METRIC = "zoo_door_refused_per_second"
_PER_POD = {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}}
#: The autoscaler's signals, as prometheus-adapter rules. Triton's queue time alone can be inflated by one client
#: (a few huge requests) and says nothing once the door refuses work, so the door's own gauges count too: the
#: requests it is working on (averaged over a minute) and the rate of its 429s (any sustained refusal means the
#: pods are too few). The HPA scales to whichever asks for the most replicas.
ADAPTER_RULES = [
    {
        "seriesQuery": 'nv_inference_queue_duration_us{namespace!="",pod!=""}',
        "resources": _PER_POD,
        "name": {"matches": "^nv_inference_queue_duration_us$", "as": QUEUE_METRIC},
        # Triton's counters are cumulative: queue microseconds per request over the last minute
        "metricsQuery": ("sum(rate(nv_inference_queue_duration_us{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>) / "
                         "clamp_min(sum(rate(nv_inference_request_success{<<.LabelMatchers>>}[1m])) by "
                         "(<<.GroupBy>>), 1)"),
    },
    {
        "seriesQuery": 'zoo_door_requests_in_flight{namespace!="",pod!=""}',
        "resources": _PER_POD,
        "name": {"matches": "^zoo_door_requests_in_flight$", "as": IN_FLIGHT_METRIC},
        "metricsQuery": "sum(avg_over_time(zoo_door_requests_in_flight{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>)",
    },
    {
        "seriesQuery": 'zoo_door_requests_total{namespace!="",pod!=""}',
        "resources": _PER_POD,
        "name": {"matches": "^zoo_door_requests_total$", "as": REFUSED_METRIC},
        "metricsQuery": ('sum(rate(zoo_door_requests_total{status="429",<<.LabelMatchers>>}[1m])) '
                         "by (<<.GroupBy>>)"),
    },
]


@dataclass
class K8sOptions:
    """What the manifests are made of (the ``zoo export`` flags fill in the export arguments)."""

    names: list[str]
    image: str = "embedding-zoo:latest"
    replicas: int = 2
    max_replicas: int = 8
    namespace: str = "default"
    repository: str = "init"  # "init" (an init container runs zoo export) or "pvc:CLAIM"
    export_args: list[str] = field(default_factory=list)  # --instances, --instance-kind, --runtime as given
    gpu: bool = False
    cpu: str = "2"
    memory: str = "4Gi"
    shm: str = "1Gi"
    queue_target_us: int = 50_000
    in_flight_target: int = 8  # door requests at work per pod (its --max-concurrent-requests is 32 by default)
    refused_target: float = 0.5  # 429s per second per pod: a pod refusing work steadily needs company


def _labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": "triton"}


def _meta(name: str, opts: K8sOptions) -> dict[str, Any]:
    return {"name": name, "namespace": opts.namespace, "labels": _labels()}


def _probe(path: str, port: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "failureThreshold": failures,
            "timeoutSeconds": 3}


def _container_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": USER, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def deployment(opts: K8sOptions) -> dict[str, Any]:
    """The Deployment of the Triton replicas."""
    resources: dict[str, Any] = {"requests": {"cpu": opts.cpu, "memory": opts.memory},
                                 "limits": {"memory": opts.memory}}
    if opts.gpu:
        resources["limits"]["nvidia.com/gpu"] = 1
    mounts = [{"name": "models", "mountPath": "/models", "readOnly": True}, {"name": "dshm", "mountPath": "/dev/shm"},
              {"name": "cache", "mountPath": "/cache"}, {"name": "tmp", "mountPath": "/tmp"}]
    # the pod's address for probes, scrapes and the Services; the admin APIs stay closed without their key
    serve = ["zoo", "serve", "--repository", "/models", "--host", "0.0.0.0", "--triton-host", "0.0.0.0",
             *(f"--{k}-port={v}" for k, v in PORTS.items())]
    env = [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "ZOO_CACHE_DIR", "value": "/cache"},
           {"name": "HOME", "value": "/cache"}]
    env += [{"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": "key", "optional": False}}}
            for var, secret in SECRETS.items()]  # a missing secret keeps the pod from starting
    container = {
        "name": "zoo", "image": opts.image, "command": serve,
        "ports": [{"name": k, "containerPort": v} for k, v in PORTS.items()],
        "env": env, "securityContext": _container_security(),
        "resources": resources, "volumeMounts": mounts,
        "startupProbe": _probe("/v2/health/ready", "http", 10, 60),  # model loading: up to 10 minutes
        "livenessProbe": _probe("/v2/health/live", "http", 10, 3),
        "readinessProbe": _probe("/health", "health", 5, 2),
    }
    if opts.repository == "init":
        models = {"name": "models", "emptyDir": {}}
        init = [{"name": "repository", "image": opts.image,
                 "command": ["zoo", "export", *opts.names, "--out", "/models", *opts.export_args],
                 "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "ZOO_CACHE_DIR", "value": "/cache"},
                         {"name": "HOME", "value": "/cache"}],
                 "securityContext": _container_security(),
                 "volumeMounts": [{"name": "models", "mountPath": "/models"}, {"name": "cache", "mountPath": "/cache"},
                                  {"name": "tmp", "mountPath": "/tmp"}]}]
    else:
        claim = opts.repository.removeprefix("pvc:")
        models = {"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        init = []
    pod: dict[str, Any] = {
        "containers": [container],
        "volumes": [models, {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": opts.shm}},
                    {"name": "cache", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"runAsNonRoot": True, "runAsUser": USER, "runAsGroup": USER, "fsGroup": USER,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "automountServiceAccountToken": False,  # zoo never talks to the Kubernetes API
    }
    if init:
        pod["initContainers"] = init
    if opts.gpu:
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORTS["metrics"]),
                   "prometheus.io/path": "/metrics"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta("zoo-triton", opts),
            "spec": {"replicas": opts.replicas, "selector": {"matchLabels": _labels()},
                     "template": {"metadata": {"labels": _labels(), "annotations": annotations}, "spec": pod}}}


def services(opts: K8sOptions) -> list[dict[str, Any]]:
    """The load-balanced Service and the headless one (one DNS name, every ready pod's address)."""
    ports = [{"name": k, "port": PORTS[k], "targetPort": k} for k in PUBLISHED]
    grpc = [{"name": "grpc", "port": PORTS["grpc"], "targetPort": "grpc"}]
    # the door's /metrics (its own port; the pods' annotations name Triton's): Prometheus's service-endpoints
    # job scrapes every pod behind an annotated Service
    door = {**_meta("zoo", opts), "annotations": {"prometheus.io/scrape": "true", "prometheus.io/path": "/metrics",
                                                  "prometheus.io/port": str(PORTS["openai"])}}
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": door,
         "spec": {"selector": _labels(), "ports": ports}},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta("zoo-replicas", opts),
         "spec": {"clusterIP": "None", "selector": _labels(), "ports": grpc}},
    ]


def network_policy(opts: K8sOptions) -> dict[str, Any]:
    """Ingress only on the published ports, and metrics only from Prometheus's pods (any namespace)."""
    prometheus = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                  "namespaceSelector": {}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _meta("zoo-triton", opts),
            "spec": {"podSelector": {"matchLabels": _labels()}, "policyTypes": ["Ingress"],
                     "ingress": [{"ports": [{"protocol": "TCP", "port": PORTS[k]} for k in PUBLISHED]},
                                 {"from": [prometheus], "ports": [{"protocol": "TCP", "port": PORTS["metrics"]}]}]}}


def _pods_metric(name: str, average: str) -> dict[str, Any]:
    return {"type": "Pods", "pods": {"metric": {"name": name}, "target": {"type": "AverageValue",
                                                                         "averageValue": average}}}


def autoscaling(opts: K8sOptions) -> list[dict[str, Any]]:
    """The HorizontalPodAutoscaler on Triton's queue time and the door's load and refusals, and a
    PodDisruptionBudget."""
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _meta("zoo-triton", opts),
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "zoo-triton"},
                    "minReplicas": opts.replicas, "maxReplicas": max(opts.max_replicas, opts.replicas),
                    "metrics": [_pods_metric(QUEUE_METRIC, str(opts.queue_target_us)),
                                _pods_metric(IN_FLIGHT_METRIC, str(opts.in_flight_target)),
                                _pods_metric(REFUSED_METRIC, f"{int(opts.refused_target * 1000)}m")],
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}}}
    pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta("zoo-triton", opts),
           "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _labels()}}}
    return [hpa, pdb]


def adapter_rules(opts: K8sOptions) -> dict[str, Any]:
    """A ConfigMap in the prometheus-adapter's format with the autoscaler's rules (also usable as the adapter
    Helm chart's ``rules.custom``)."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("zoo-prometheus-adapter-rules", opts),
            "data": {"config.yaml": yaml.safe_dump({"rules": ADAPTER_RULES}, sort_keys=False)}}


def manifests(opts: K8sOptions) -> dict[str, list[dict[str, Any]]]:
    """File name → the objects it holds."""
    return {"deployment.yaml": [deployment(opts)], "service.yaml": services(opts), "hpa.yaml": autoscaling(opts),
            "networkpolicy.yaml": [network_policy(opts)], "prometheus-adapter-rules.yaml": [adapter_rules(opts)]}


def write_manifests(opts: K8sOptions, folder: Path) -> list[Path]:
    """Write the manifests under ``folder``; returns the files."""
    if opts.replicas < 1:
        raise InvalidArgumentError("--k8s-replicas must be at least 1", "k8s_replicas")
    if opts.repository != "init" and not (opts.repository.startswith("pvc:") and len(opts.repository) > 4):
        raise InvalidArgumentError(f"--k8s-repository {opts.repository!r} is not 'init' or 'pvc:CLAIM'",
                                   "k8s_repository")
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, objects in manifests(opts).items():
        path = folder / name
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
        out.append(path)
    return out
