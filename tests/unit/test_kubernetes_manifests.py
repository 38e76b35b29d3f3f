"""The Kubernetes manifests in deploy/kubernetes/, checked offline.

`kubectl kustomize` renders the base alone, the base with each component,
with every component at once, and the example overlay. Every rendered
document of a built-in kind is validated by kubernetes-validate against
Kubernetes 1.32's schemas, strictly (an unknown or misspelled field fails).
The custom resources (PodMonitor, PrometheusRule, ScaledObject) have no
schema here, so their key fields are asserted instead, the alert rules go
through `promtool check rules` and `promtool test rules`, and the
autoscalers' PromQL through promtool too. Nothing here needs a cluster;
deploy/kubernetes/README.md lists what only a cluster can show.

kubectl and promtool are system tools: scripts/install-system-tools.sh
installs promtool and says how to get kubectl (scripts/bootstrap.sh runs it).
Without them these tests fail, never skip.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tools.paths import ROOT, SHIPPED_MODEL
from triton_embeds_server import cli as openai_cli

KUBE = ROOT / "deploy" / "kubernetes"
BASE = KUBE / "base"
COMPONENTS = KUBE / "components"
EXAMPLE = KUBE / "overlays" / "example"
KUBERNETES_VERSION = "1.32"
INSTALL_HINT = (
    "run scripts/install-system-tools.sh (scripts/bootstrap.sh runs it; it says how to get kubectl)"
)

MODEL_REPOSITORY = "/opt/triton-prompt-embeds/model_repository"
MODEL_JSON_PATH = f"{MODEL_REPOSITORY}/vllm_model/1/model.json"
CONFIG_PBTXT_PATH = f"{MODEL_REPOSITORY}/vllm_model/config.pbtxt"
WEIGHTS_PATH = "/models/model"
HEALTH_PORT = 8003
HEADLESS_SERVICE = "triton-embeds-grpc-headless"

# Custom resources without a schema in kubernetes-validate: their fields are
# asserted by the tests below.
CUSTOM_KINDS = {"PodMonitor", "PrometheusRule", "ScaledObject"}

Resource = tuple[str, str]  # (kind, name without kustomize's hash suffix)
BASE_RESOURCES: set[Resource] = {
    ("ConfigMap", "triton-embeds-model-config"),
    ("Deployment", "triton-embeds"),
    ("Service", "triton-embeds"),
    ("Service", HEADLESS_SERVICE),
    ("PodDisruptionBudget", "triton-embeds"),
}
COMPONENT_RESOURCES: dict[str, set[Resource]] = {
    "monitoring": {
        ("PodMonitor", "triton-embeds"),
        ("PodMonitor", "triton-embeds-openai"),
        ("PrometheusRule", "triton-embeds"),
    },
    "autoscaling-keda": {("ScaledObject", "triton-embeds")},
    "autoscaling-hpa": {
        ("HorizontalPodAutoscaler", "triton-embeds"),
        ("ConfigMap", "triton-embeds-prometheus-adapter-rules"),
    },
    "openai-server": {
        ("Deployment", "triton-embeds-openai"),
        ("Service", "triton-embeds-openai"),
        ("PodDisruptionBudget", "triton-embeds-openai"),
    },
    "multi-gpu": {("ConfigMap", "triton-embeds-model-pbtxt")},
}
EXAMPLE_COMPONENTS = ("monitoring", "autoscaling-keda", "openai-server", "multi-gpu")
ALL = tuple(COMPONENT_RESOURCES)

# Variants rendered: the base, the base with each component, with all of
# them (both autoscalers too: they render together, though a cluster should
# run one), and the example overlay.
VARIANTS: dict[str, tuple[str, ...]] = {
    "base": (),
    **{name: (name,) for name in COMPONENT_RESOURCES},
    "all": ALL,
    "example": EXAMPLE_COMPONENTS,
}


# -- tools and rendering --------------------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: {INSTALL_HINT}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return _tool("promtool")


@functools.cache
def _kustomize(directory: Path) -> list[dict[str, Any]]:
    run = subprocess.run(
        [_tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    if run.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{run.stderr}", pytrace=False)
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


@pytest.fixture(scope="session")
def overlays(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One overlay per variant (the example is the repository's own)."""
    root = tmp_path_factory.mktemp("overlays")
    for variant, components in VARIANTS.items():
        if variant == "example":
            continue
        directory = root / variant
        directory.mkdir()
        # Kustomize takes only relative paths to bases and components.
        relative = Path(os.path.relpath(KUBE, directory))
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [str(relative / "base")],
            "components": [str(relative / "components" / name) for name in components],
        }
        (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return root


@pytest.fixture(scope="session")
def rendered(overlays: Path) -> dict[str, list[dict[str, Any]]]:
    """Each variant's rendered documents."""
    return {
        variant: _kustomize(EXAMPLE if variant == "example" else overlays / variant) for variant in VARIANTS
    }


def _unhashed(kind: str, name: str) -> str:
    """A generated ConfigMap's name without the content hash kustomize appends."""
    return re.sub(r"-[a-z0-9]{10}$", "", name) if kind == "ConfigMap" else name


def _resources(docs: list[dict[str, Any]]) -> set[Resource]:
    return {(d["kind"], _unhashed(d["kind"], d["metadata"]["name"])) for d in docs}


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and _unhashed(kind, d["metadata"]["name"]) == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    containers = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    assert len(containers) == 1
    return containers[0]


def _triton(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _container(_one(docs, "Deployment", "triton-embeds"), "triton")


def _volume(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    volumes = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == name]
    assert len(volumes) == 1, f"volume {name}"
    return volumes[0]


def _mount(container: dict[str, Any], path: str) -> dict[str, Any]:
    mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == path]
    assert len(mounts) == 1, f"one volume mounted at {path}"
    return mounts[0]


def _flag(command: list[str], flag: str) -> str:
    """The value after `flag` in an argument list (before any `--`)."""
    options = command[: command.index("--")] if "--" in command else command
    assert flag in options, f"{flag} missing from {command}"
    return options[options.index(flag) + 1]


def _port_number(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port: a number, or the name of a container port."""
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    assert len(numbers) == 1, f"container {container['name']} has no port named {port}"
    return int(numbers[0])


def _quantity(value: str) -> float:
    """A Kubernetes memory quantity in bytes (binary and decimal suffixes)."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match, value
    return float(match[1]) * units.get(match[2], 1)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _pod_labels(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] == "Deployment"
    }


def _model_metric_names() -> set[str]:
    """The metric families the model registers (embeds_backend/metrics.py)."""
    source = (SHIPPED_MODEL / "1" / "embeds_backend" / "metrics.py").read_text()
    names = set(re.findall(r'"(embeds_[a-z_]+)"', source))
    assert "embeds_requests_inflight" in names
    return names


def _metric_names_in(promql: str) -> set[str]:
    """Metric names a PromQL expression or template uses, histogram suffixes removed."""
    names = set(re.findall(r"\b(embeds_[a-z_]+)", promql))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def _check_rules(promtool: str, path: Path) -> None:
    run = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


# -- every variant renders, validates, and holds exactly its resources ---------------------------


def test_every_component_is_covered() -> None:
    on_disk = {p.name for p in COMPONENTS.iterdir() if (p / "kustomization.yaml").exists()}
    assert on_disk == set(COMPONENT_RESOURCES)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_renders_its_resources(rendered: dict[str, list[dict[str, Any]]], variant: str) -> None:
    expected = set(BASE_RESOURCES)
    for component in VARIANTS[variant]:
        expected |= COMPONENT_RESOURCES[component]
    assert _resources(rendered[variant]) == expected
    assert len(rendered[variant]) == len(expected), "a resource rendered twice"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_validates_against_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    for doc in rendered[variant]:
        where = f"{doc['kind']} {doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            assert doc["kind"] in CUSTOM_KINDS, f"{where}: no schema in Kubernetes {KUBERNETES_VERSION}"
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{where} ({variant}): {path}: {error.message}", pytrace=False)
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "triton-prompt-embeds", where


def test_validation_is_strict(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The validation above is not vacuous: a misspelled field fails it."""
    deployment = copy.deepcopy(_one(rendered["base"], "Deployment", "triton-embeds"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"periodSeconds": 5}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# -- the Triton replica ---------------------------------------------------------------------------


def test_probes_use_the_health_port(rendered: dict[str, list[dict[str, Any]]]) -> None:
    triton = _triton(rendered["base"])
    assert int(_flag(triton["command"], "--health-port")) == HEALTH_PORT
    paths = {"startupProbe": "/ready", "readinessProbe": "/ready", "livenessProbe": "/live"}
    for probe, path in paths.items():
        http = triton[probe]["httpGet"]
        assert http["path"] == path, probe
        assert _port_number(triton, http["port"]) == HEALTH_PORT, probe


def test_startup_allows_a_long_model_load(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = _one(rendered["base"], "Deployment", "triton-embeds")
    startup = _container(deployment, "triton")["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert budget >= 15 * 60, "weights, CUDA graphs and compilation take minutes"
    assert deployment["spec"]["progressDeadlineSeconds"] >= budget


def test_replica_ports_match_the_command(rendered: dict[str, list[dict[str, Any]]]) -> None:
    triton = _triton(rendered["base"])
    command = triton["command"]
    assert command[:3] == ["python3", "-m", "triton_embeds_replica"]
    assert command[command.index("--") + 1 :] == [f"--model-repository={MODEL_REPOSITORY}"]
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002, "health": HEALTH_PORT}
    for name, port in ports.items():
        assert int(_flag(command, f"--{name}-port")) == port


def test_grace_period_covers_prestop_drain_and_shutdown(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = _one(rendered["base"], "Deployment", "triton-embeds")
    triton = _container(deployment, "triton")
    pre_stop = triton["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    sleep = float(pre_stop[1])
    drain = float(_flag(triton["command"], "--drain-timeout"))
    unload = float(_flag(triton["command"], "--unload-timeout"))
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert sleep >= 3, "endpoint removal needs a few seconds to reach kube-proxy and DNS"
    # After the drain, tritonserver unloads the model and stops the engine
    # within the unload timeout; the supervisor's own waits add a few seconds.
    assert grace >= sleep + drain + unload + 15, (grace, sleep, drain, unload)


def test_dev_shm_is_memory_backed(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = _one(rendered["base"], "Deployment", "triton-embeds")
    mount = _mount(_container(deployment, "triton"), "/dev/shm")
    empty_dir = _volume(deployment, mount["name"])["emptyDir"]
    assert empty_dir["medium"] == "Memory"
    assert _quantity(empty_dir["sizeLimit"]) >= 2**30


def test_one_gpu_and_resources(rendered: dict[str, list[dict[str, Any]]]) -> None:
    resources = _triton(rendered["base"])["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"].get("nvidia.com/gpu", 1) == 1
    assert _quantity(resources["limits"]["memory"]) >= _quantity(resources["requests"]["memory"])


def test_engine_settings_and_weights_are_mounted(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["base"]
    deployment = _one(docs, "Deployment", "triton-embeds")
    triton = _container(deployment, "triton")

    config_mount = _mount(triton, MODEL_JSON_PATH)
    assert config_mount["subPath"] == "model.json"
    assert config_mount.get("readOnly") is True
    config_map = _one(docs, "ConfigMap", "triton-embeds-model-config")
    assert _volume(deployment, config_mount["name"])["configMap"]["name"] == config_map["metadata"]["name"]
    engine = json.loads(config_map["data"]["model.json"])
    assert engine["model"] == WEIGHTS_PATH
    assert engine["enable_prompt_embeds"] is True

    weights_mount = _mount(triton, WEIGHTS_PATH)
    assert weights_mount.get("readOnly") is True
    claim = _volume(deployment, weights_mount["name"])["persistentVolumeClaim"]
    assert claim["claimName"] == "model-weights"


def test_pods_run_unprivileged(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for deployment in (d for d in rendered["all"] if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod.get("automountServiceAccountToken") is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context.get("privileged", False) is False
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            # A read-only root filesystem needs a writable /tmp.
            if context.get("readOnlyRootFilesystem"):
                _mount(container, "/tmp")


# -- Services and disruption budgets --------------------------------------------------------------


def test_services_select_one_deployment_each(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["all"]
    pods = _pod_labels(docs)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for service in (d for d in docs if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        chosen = [name for name, labels in pods.items() if _selects(selector, labels)]
        assert len(chosen) == 1, f"Service {service['metadata']['name']} selects {chosen}"
        container = deployments[chosen[0]]["spec"]["template"]["spec"]["containers"][0]
        for port in service["spec"]["ports"]:
            assert _port_number(container, port["targetPort"]) == port["port"]


def test_cluster_service_ports(rendered: dict[str, list[dict[str, Any]]]) -> None:
    service = _one(rendered["base"], "Service", "triton-embeds")
    assert service["spec"]["type"] == "ClusterIP"
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert {name: p["port"] for name, p in ports.items()} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert ports["grpc"]["appProtocol"] == "grpc"


def test_headless_grpc_service(rendered: dict[str, list[dict[str, Any]]]) -> None:
    service = _one(rendered["base"], "Service", HEADLESS_SERVICE)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"].get("publishNotReadyAddresses", False) is False
    assert [(p["name"], p["port"], p.get("appProtocol")) for p in service["spec"]["ports"]] == [
        ("grpc", 8001, "grpc")
    ]


def test_disruption_budgets_select_their_deployments(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["all"]
    pods = _pod_labels(docs)
    for budget in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        selector = budget["spec"]["selector"]["matchLabels"]
        chosen = [name for name, labels in pods.items() if _selects(selector, labels)]
        assert chosen == [budget["metadata"]["name"]]
        assert budget["spec"]["maxUnavailable"] == 1
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        assert (
            deployment["spec"]["selector"]["matchLabels"].items()
            <= pods[deployment["metadata"]["name"]].items()
        )


# -- monitoring -----------------------------------------------------------------------------------


def test_pod_monitor_scrapes_the_metrics_port(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["all"]
    monitor = _one(docs, "PodMonitor", "triton-embeds")
    pods = _pod_labels(docs)
    chosen = [
        name for name, labels in pods.items() if _selects(monitor["spec"]["selector"]["matchLabels"], labels)
    ]
    assert chosen == ["triton-embeds"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    assert _port_number(_triton(docs), endpoint["port"]) == 8002
    # The job label the alert and autoscaling queries select on.
    assert pods["triton-embeds"][monitor["spec"]["jobLabel"]] == "triton-embeds"

    openai = _one(docs, "PodMonitor", "triton-embeds-openai")
    chosen = [
        name for name, labels in pods.items() if _selects(openai["spec"]["selector"]["matchLabels"], labels)
    ]
    assert chosen == ["triton-embeds-openai"]
    openai_container = _container(_one(docs, "Deployment", "triton-embeds-openai"), "openai")
    assert _port_number(openai_container, openai["spec"]["podMetricsEndpoints"][0]["port"]) == 9000


def _rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups = _one(docs, "PrometheusRule", "triton-embeds")["spec"]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_prometheus_rules_pass_promtool(
    rendered: dict[str, list[dict[str, Any]]], promtool: str, tmp_path: Path
) -> None:
    spec = _one(rendered["monitoring"], "PrometheusRule", "triton-embeds")["spec"]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": spec["groups"]}))
    _check_rules(promtool, path)


def test_alerts_cover_the_failure_modes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    rules = _rules(rendered["monitoring"])
    by_metric: dict[str, list[str]] = {}
    for rule in rules:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        for name in _metric_names_in(rule["expr"]):
            by_metric.setdefault(name, []).append(rule["alert"])
    for metric in (
        "embeds_engine_ready",
        "embeds_engine_restarts_total",
        "embeds_rejections_total",
        "embeds_requests_finished_total",
        "embeds_engine_kv_cache_usage",
        "embeds_engine_waiting_requests",
    ):
        assert metric in by_metric, f"no alert on {metric}"
    assert set(by_metric) <= _model_metric_names()


# Synthetic series and the alerts they must raise (and only those). Alerts
# with a `for` are checked after it has passed; annotations are left out.


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    labels = {"namespace": "ns", "model": "m", **labels}
    return {"series": name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}", "values": values}


def _fires(at: str, alert: str, *alerts: dict[str, str]) -> dict[str, Any]:
    """At `at`, `alert` is firing with exactly these label sets (none: silent)."""
    return {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": labels} for labels in alerts]}


def _labels(severity: str, **labels: str) -> dict[str, str]:
    return {"severity": severity, "namespace": "ns", "model": "m", **labels}


ALERT_TESTS: dict[str, Any] = {
    "evaluation_interval": "1m",
    "tests": [
        {
            "interval": "1m",
            "input_series": [
                # p0's engine went down at 1m; p1 drains; p2 is healthy.
                _series("embeds_engine_ready", "1 0x40", pod="p0"),
                _series("embeds_draining", "0x40", pod="p0"),
                _series("embeds_engine_ready", "0x40", pod="p1"),
                _series("embeds_draining", "1x40", pod="p1"),
                _series("embeds_engine_ready", "1x40", pod="p2"),
                _series("embeds_draining", "0x40", pod="p2"),
            ],
            "alert_rule_test": [
                _fires("8m", "TritonEmbedsEngineNotReady"),
                _fires("20m", "TritonEmbedsEngineNotReady", _labels("critical", pod="p0")),
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                # Per second: 1 completed, 0.1 unavailable, 1/60 failed.
                _series("embeds_requests_finished_total", "0+60x40", pod="p0", outcome="completed"),
                _series("embeds_requests_finished_total", "0+6x40", pod="p0", outcome="unavailable"),
                _series("embeds_requests_finished_total", "0+1x40", pod="p0", outcome="failed"),
                # Half the requests rejected for their hidden size.
                _series("embeds_requests_total", "0+60x40", pod="p0", kind="embeds"),
                _series("embeds_rejections_total", "0+30x40", pod="p0", rule="hidden_size"),
            ],
            "alert_rule_test": [
                _fires("25m", "TritonEmbedsUnavailableRateHigh", _labels("warning")),
                _fires("25m", "TritonEmbedsFailedRequests", _labels("critical")),
                _fires("25m", "TritonEmbedsRejectionRateHigh", _labels("warning", rule="hidden_size")),
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                _series("embeds_engine_restarts_total", "0 1 2 3x40", pod="p0"),
                _series("embeds_engine_restarts_total", "0x40", pod="p1"),
                _series("embeds_engine_kv_cache_usage", "0.99x40", pod="p0"),
                _series("embeds_engine_kv_cache_usage", "0.5x40", pod="p1"),
                _series("embeds_engine_waiting_requests", "0+2x40", pod="p0"),
                {"series": 'up{job="triton-embeds",namespace="ns",pod="p1"}', "values": "0x40"},
            ],
            "alert_rule_test": [
                _fires("5m", "TritonEmbedsEngineRestarted", _labels("warning", pod="p0")),
                _fires("5m", "TritonEmbedsEngineRestartsRising", _labels("critical", pod="p0")),
                _fires("15m", "TritonEmbedsKVCacheNearlyFull", _labels("warning", pod="p0")),
                _fires("25m", "TritonEmbedsQueueGrowing", _labels("warning")),
                _fires(
                    "10m",
                    "TritonEmbedsMetricsDown",
                    {"severity": "warning", "job": "triton-embeds", "namespace": "ns", "pod": "p1"},
                ),
            ],
        },
    ],
}


def test_alerts_fire_on_synthetic_series(
    rendered: dict[str, list[dict[str, Any]]], promtool: str, tmp_path: Path
) -> None:
    groups = copy.deepcopy(_one(rendered["monitoring"], "PrometheusRule", "triton-embeds")["spec"]["groups"])
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)  # promtool compares them verbatim; their wording may change
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    tested = {case["alertname"] for test in ALERT_TESTS["tests"] for case in test["alert_rule_test"]}
    assert tested == {rule["alert"] for group in groups for rule in group["rules"]}, "an alert without a test"
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], **ALERT_TESTS}))
    run = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr


# -- autoscaling ----------------------------------------------------------------------------------


def _scaled_object(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(docs, "ScaledObject", "triton-embeds")


def _adapter_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    config_map = _one(docs, "ConfigMap", "triton-embeds-prometheus-adapter-rules")
    return yaml.safe_load(config_map["data"]["config.yaml"])["rules"]


def test_keda_scales_the_deployment_on_engine_load(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["autoscaling-keda"]
    spec = _scaled_object(docs)["spec"]
    target = spec["scaleTargetRef"]
    assert (target.get("apiVersion", "apps/v1"), target.get("kind", "Deployment")) == (
        "apps/v1",
        "Deployment",
    )
    _one(docs, "Deployment", target["name"])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], "never to zero: a load takes minutes"
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metricType"] == "AverageValue", "a target per replica"
    metadata = trigger["metadata"]
    assert all(isinstance(value, str) for value in metadata.values()), "KEDA's trigger metadata is strings"
    assert float(metadata["threshold"]) > 0
    assert metadata["serverAddress"].startswith("http")
    query = metadata["query"]
    assert _metric_names_in(query) == {"embeds_engine_waiting_requests", "embeds_engine_running_requests"}
    assert _metric_names_in(query) <= _model_metric_names()
    assert 'job="triton-embeds"' in query, "the monitoring component's job label"


def test_hpa_scales_on_the_adapter_metric(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["autoscaling-hpa"]
    spec = _one(docs, "HorizontalPodAutoscaler", "triton-embeds")["spec"]
    _one(docs, "Deployment", spec["scaleTargetRef"]["name"])
    assert spec["scaleTargetRef"]["kind"] == "Deployment"
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
    (metric,) = spec["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    assert metric["pods"]["target"]["type"] == "AverageValue"
    assert name in _model_metric_names()
    (rule,) = [r for r in _adapter_rules(docs) if r["name"]["as"] == name]
    assert _metric_names_in(rule["seriesQuery"]) == {name}
    assert re.fullmatch(rule["name"]["matches"], name)
    overrides = rule["resources"]["overrides"]
    assert overrides["pod"]["resource"] == "pod", "a per-pod metric"
    assert overrides["namespace"]["resource"] == "namespace"


def test_autoscaler_queries_are_valid_promql(
    rendered: dict[str, list[dict[str, Any]]], promtool: str, tmp_path: Path
) -> None:
    docs = rendered["all"]
    queries = [_scaled_object(docs)["spec"]["triggers"][0]["metadata"]["query"]]
    for rule in _adapter_rules(docs):
        # prometheus-adapter's template, filled as the adapter would for one namespace's pods.
        for template in (rule["seriesQuery"], rule["metricsQuery"]):
            queries.append(
                template.replace("<<.Series>>", rule["name"]["as"])
                .replace("<<.LabelMatchers>>", 'namespace="ns",pod=~"p0|p1"')
                .replace("<<.GroupBy>>", "pod")
            )
    rules = [{"record": f"autoscaler:query_{i}", "expr": query} for i, query in enumerate(queries)]
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "autoscalers", "rules": rules}]}))
    _check_rules(promtool, path)


# -- the OpenAI server ----------------------------------------------------------------------------


def test_openai_server(rendered: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    docs = rendered["openai-server"]
    deployment = _one(docs, "Deployment", "triton-embeds-openai")
    container = _container(deployment, "openai")
    assert container["command"] == ["triton-embeds-openai"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})

    readiness = container["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/health"
    assert _port_number(container, readiness["port"]) == 9000
    # /health is 503 while Triton is down; liveness on it would restart healthy pods.
    assert container["livenessProbe"].get("httpGet", {}).get("path") != "/health"

    # The arguments and the API key's variable are the ones the server reads.
    (key_env,) = [e for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    monkeypatch.setenv(key_env["name"], "from-the-secret")
    settings = openai_cli.parse_args(container["args"])
    assert settings.api_key == "from-the-secret"
    assert "--api-key" not in container["args"], "kept out of the command line"
    assert settings.port == _port_number(container, "http") == 9000
    assert settings.triton_urls == (f"dns:///{HEADLESS_SERVICE}:8001",)
    headless = _one(docs, "Service", HEADLESS_SERVICE)
    assert headless["spec"]["clusterIP"] == "None"
    assert [p["port"] for p in headless["spec"]["ports"]] == [8001]

    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    sleep = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert grace >= sleep + 30, "uvicorn's graceful shutdown takes up to 30 s"


# -- multi-GPU ------------------------------------------------------------------------------------


def _read_pbtxt(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_multi_gpu_runs_one_tensor_parallel_instance(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["multi-gpu"]
    deployment = _one(docs, "Deployment", "triton-embeds")
    triton = _container(deployment, "triton")
    gpus = triton["resources"]["limits"]["nvidia.com/gpu"]
    assert gpus == 2
    assert triton["resources"]["requests"].get("nvidia.com/gpu", gpus) == gpus

    engine = json.loads(_one(docs, "ConfigMap", "triton-embeds-model-config")["data"]["model.json"])
    assert engine["tensor_parallel_size"] == gpus
    base_engine = json.loads(
        _one(rendered["base"], "ConfigMap", "triton-embeds-model-config")["data"]["model.json"]
    )
    assert {k: v for k, v in engine.items() if k != "tensor_parallel_size"} == base_engine

    mount = _mount(triton, CONFIG_PBTXT_PATH)
    assert mount["subPath"] == "config.pbtxt"
    config_map = _one(docs, "ConfigMap", "triton-embeds-model-pbtxt")
    assert _volume(deployment, mount["name"])["configMap"]["name"] == config_map["metadata"]["name"]
    config = _read_pbtxt(config_map["data"]["config.pbtxt"])
    assert [
        (g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group
    ] == [(1, "KIND_MODEL")]
    # Otherwise the repository's config.pbtxt, field for field.
    shipped = _read_pbtxt((SHIPPED_MODEL / "config.pbtxt").read_text())
    assert shipped.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    del config.instance_group[:]
    del shipped.instance_group[:]
    assert config == shipped

    base_shm = _volume(_one(rendered["base"], "Deployment", "triton-embeds"), "dshm")["emptyDir"]
    shm = _volume(deployment, _mount(triton, "/dev/shm")["name"])["emptyDir"]
    assert shm["medium"] == "Memory"
    assert _quantity(shm["sizeLimit"]) > _quantity(base_shm["sizeLimit"])
    assert _quantity(triton["resources"]["limits"]["memory"]) > _quantity(shm["sizeLimit"])


# -- the example overlay --------------------------------------------------------------------------


def test_example_overrides_image_claim_and_namespace(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["example"]
    assert {d["metadata"].get("namespace") for d in docs} == {"triton-embeds"}
    images = {
        c["image"]
        for d in docs
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"registry.example.com/triton-prompt-embeds:0.1.0"}
    base_images = {
        c["image"]
        for c in _one(rendered["base"], "Deployment", "triton-embeds")["spec"]["template"]["spec"][
            "containers"
        ]
    }
    assert base_images == {"triton-prompt-embeds:latest"}
    deployment = _one(docs, "Deployment", "triton-embeds")
    claim = _volume(deployment, _mount(_container(deployment, "triton"), WEIGHTS_PATH)["name"])
    assert claim["persistentVolumeClaim"]["claimName"] != "model-weights"
    assert claim["persistentVolumeClaim"]["readOnly"] is True


# -- the replica supervisor's command line --------------------------------------------------------


def test_replica_supervisor_parses_the_command(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The command as the supervisor reads it (argparse exits on an unknown option)."""
    replica_cli = pytest.importorskip("triton_embeds_replica.cli")
    triton = _triton(rendered["base"])
    command = triton["command"]
    assert command[:3] == ["python3", "-m", "triton_embeds_replica"]
    config = replica_cli.parse_args(command[3:])
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert (config.http_port, config.grpc_port, config.metrics_port, config.health_port) == (
        ports["http"],
        ports["grpc"],
        ports["metrics"],
        ports["health"],
    )
    assert config.triton_args == [f"--model-repository={MODEL_REPOSITORY}"]
    assert config.drain_timeout_s == float(_flag(command, "--drain-timeout"))
    assert config.unload_timeout_s == float(_flag(command, "--unload-timeout"))
    # Its drain file goes to the runtime directory, which must be writable.
    _mount(triton, str(config.runtime_dir))
