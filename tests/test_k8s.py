"""Kubernetes manifests from ``zoo export --k8s``: valid against the Kubernetes schemas (offline), and
wired the way docs/DEPLOY.md says."""

import kubernetes_validate
import pytest
import yaml

from serving.k8s import ADAPTER_RULES, IN_FLIGHT_METRIC, PORTS, PUBLISHED, QUEUE_METRIC, REFUSED_METRIC, SECRETS
from zoo.cli import main
from zoo.defaults import default_model

K8S_VERSION = "1.33.0"


def _objects(folder):
    return {p.name: list(yaml.safe_load_all(p.read_text())) for p in sorted(folder.glob("*.yaml"))}


def _validate(objects):
    for docs in objects.values():
        for doc in docs:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_cpu_manifests_validate_and_wire_probes_shm_and_autoscaling(tmp_path):
    name = default_model("text")
    assert main(["export", name, "--out", str(tmp_path / "repo"), "--k8s", str(tmp_path / "k8s"),
                 "--k8s-replicas", "3", "--runtime", "onnx-int8", "--k8s-image", "registry.local/zoo:1"]) == 0
    objects = _objects(tmp_path / "k8s")
    assert set(objects) == {"deployment.yaml", "service.yaml", "hpa.yaml", "networkpolicy.yaml",
                            "prometheus-adapter-rules.yaml"}
    _validate(objects)
    dep = objects["deployment.yaml"][0]
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    zoo = pod["containers"][0]
    assert zoo["image"] == "registry.local/zoo:1"
    assert zoo["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert zoo["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert zoo["readinessProbe"]["httpGet"] == {"path": "/health", "port": "health"}  # supervision's view
    assert {p["containerPort"] for p in zoo["ports"]} == set(PORTS.values())
    assert "--host" in zoo["command"] and "0.0.0.0" in zoo["command"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory" and {"name": "dshm", "mountPath": "/dev/shm"} in zoo["volumeMounts"]
    init = pod["initContainers"][0]["command"]
    assert init[:3] == ["zoo", "export", name] and "--runtime=onnx-int8" in init  # the same export, in the pod
    assert "nvidia.com/gpu" not in zoo["resources"]["limits"] and "tolerations" not in pod
    svc, headless = objects["service.yaml"]
    assert headless["spec"]["clusterIP"] == "None" and svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    # published: the door, gRPC inference (admin needs its key) and /health; never Triton's HTTP or metrics
    assert {p["port"] for p in svc["spec"]["ports"]} == {8080, 8001, 8003} == {PORTS[k] for k in PUBLISHED}
    assert [p["port"] for p in headless["spec"]["ports"]] == [8001]
    policy = objects["networkpolicy.yaml"][0]["spec"]
    assert policy["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    open_ports = {p["port"] for rule in policy["ingress"] if "from" not in rule for p in rule["ports"]}
    assert open_ports == {8080, 8001, 8003}
    scrape = next(rule for rule in policy["ingress"] if "from" in rule)
    assert [p["port"] for p in scrape["ports"]] == [8002]
    # non-root, nothing to escalate, and never without the keys
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    for c in [zoo, *pod["initContainers"]]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
        assert sc["readOnlyRootFilesystem"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in zoo["env"] if "valueFrom" in e}
    assert {n: r["name"] for n, r in refs.items()} == SECRETS and not any(r["optional"] for r in refs.values())
    assert zoo["command"][zoo["command"].index("--triton-host") + 1] == "0.0.0.0"
    hpa = objects["hpa.yaml"][0]
    assert [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]] == [QUEUE_METRIC, IN_FLIGHT_METRIC,
                                                                             REFUSED_METRIC]
    assert hpa["spec"]["minReplicas"] == 3
    rules = yaml.safe_load(objects["prometheus-adapter-rules.yaml"][0]["data"]["config.yaml"])["rules"]
    assert rules == ADAPTER_RULES and "nv_inference_queue_duration_us" in rules[0]["metricsQuery"]
    # the adapter's rules read the metrics the door really exports, under the names it gives them
    from serving.door_metrics import DoorMetrics
    exported = DoorMetrics().exposition().decode()
    for rule in rules[1:]:
        assert rule["name"]["matches"].strip("^$") in exported
    assert 'status="429"' in rules[2]["metricsQuery"]
    door = next(s for s in objects["service.yaml"] if s["metadata"]["name"] == "zoo")
    assert door["metadata"]["annotations"]["prometheus.io/port"] == str(PORTS["openai"])
    assert (tmp_path / "repo").is_dir()


def test_gpu_variant_and_volume_repository(tmp_path):
    assert main(["export", default_model("text"), "--out", str(tmp_path / "repo"), "--k8s", str(tmp_path / "k8s"),
                 "--instance-kind", "gpu", "--k8s-repository", "pvc:zoo-models"]) == 0
    objects = _objects(tmp_path / "k8s")
    _validate(objects)
    pod = objects["deployment.yaml"][0]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu" and "initContainers" not in pod
    models = next(v for v in pod["volumes"] if v["name"] == "models")
    assert models["persistentVolumeClaim"] == {"claimName": "zoo-models", "readOnly": True}


def test_schema_check_catches_a_broken_manifest(tmp_path):
    assert main(["export", default_model("text"), "--out", str(tmp_path / "repo"), "--k8s", str(tmp_path / "k8s")]) == 0
    dep = _objects(tmp_path / "k8s")["deployment.yaml"][0]
    dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8001"  # a string: invalid
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
    assert main(["export", "--out", str(tmp_path / "r2"), "--k8s", str(tmp_path / "k2"),
                 "--k8s-repository", "nfs:x"]) == 2
    assert not (tmp_path / "r2").exists()
