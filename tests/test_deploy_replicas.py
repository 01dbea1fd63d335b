"""deploy/replicas (issue 15): the compose file, the Kubernetes manifest, the nginx config, the
image's entrypoint and the replicas' config, checked as far as they can be without a container
engine: they parse, reference each other consistently, name no registry host, and the config
validates; nginx checks its config with ``nginx -t`` where it is installed."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import parse_json5, substitute_vars, validate_config
from gateway.shared import StateSection

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "replicas"
ENV = {"REDIS_PASSWORD": "pw-for-the-test", "HF_TOKEN": "hf_x", "CODERCLAW_GATEWAY_TOKEN": "t"}


def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def manifests() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s.yaml").read_text()) if d is not None]
    assert all(isinstance(d, dict) for d in docs)
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


def check_replica_config(text: str) -> StateSection:
    """The config validates as the gateway's ``Config`` (its ``state`` section included),
    after ``${VAR}`` substitution."""
    data = substitute_vars(parse_json5(text, "coderclaw.json"), ENV, "coderclaw.json")
    config = validate_config(data, "coderclaw.json", text)
    state = config.state
    assert config.gateway.bind == "lan"
    assert config.gateway.port == 18789
    assert state.redis is not None
    assert state.redis.url == "redis://:pw-for-the-test@redis:6379/0"
    return state


def test_the_replicas_config_binds_to_the_lan_and_shares_state_through_redis() -> None:
    """Both copies of the config (the compose file's and the ConfigMap's) validate, bind to the
    LAN, and take the Redis password from the environment, never written in them."""
    for text in (
        (DEPLOY / "coderclaw.json").read_text(),
        by_kind("ConfigMap")["coderclaw-config"]["data"]["coderclaw.json"],
    ):
        assert "${REDIS_PASSWORD}" in text
        check_replica_config(text)


def test_compose_runs_two_gateways_behind_nginx_with_redis() -> None:
    """Two gateway services built from the repository's Dockerfile, each with its own ledger
    volume and the tokens from the 0600 .env file; Redis with a health check they wait for;
    nginx publishing the one port the team uses."""
    services = compose()["services"]
    assert set(services) == {"gateway-a", "gateway-b", "redis", "nginx"}
    ledgers = set()
    for name in ("gateway-a", "gateway-b"):
        gateway = services[name]
        assert (ROOT / gateway["build"]["context"].replace("../..", ".")).is_dir()
        assert (DEPLOY.parent.parent / gateway["build"]["dockerfile"]).is_file()
        assert gateway["env_file"] == ".env"
        assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "/readyz" in " ".join(gateway["healthcheck"]["test"])
        mounts = dict(v.rsplit(":", 2)[:2] for v in gateway["volumes"] if v.count(":") == 2)
        assert mounts == {"./coderclaw.json": "/etc/coderclaw/coderclaw.json"}
        ledgers |= {v.split(":")[0] for v in gateway["volumes"] if v.startswith("ledger-")}
    assert ledgers == {"ledger-a", "ledger-b"}
    assert set(compose()["volumes"]) >= ledgers
    assert "REDIS_PASSWORD" not in " ".join(services["redis"]["command"]).replace(
        '"$$REDIS_PASSWORD"', ""
    )
    assert services["nginx"]["ports"] == ["18789:8080"]
    assert services["nginx"]["volumes"] == ["./nginx.conf:/etc/nginx/nginx.conf:ro"]


def test_the_env_example_names_every_variable_the_files_use() -> None:
    """The variables the config and compose read are the ones env.example tells to fill in."""
    names = set(re.findall(r"^([A-Z_]+)=", (DEPLOY / "env.example").read_text(), re.M))
    assert names == set(ENV)
    used = set(re.findall(r"\$\{([A-Z_]+)\}", (DEPLOY / "coderclaw.json").read_text()))
    assert used <= names


def test_the_kubernetes_manifest_has_every_object_with_its_required_fields() -> None:
    """A Secret for the tokens, a ConfigMap for coderclaw.json, Redis as a Deployment and a
    Service, the gateway as a Deployment of 2 with readiness on /readyz and liveness on
    /healthz, and a Service; every selector matches its pods and every reference resolves."""
    docs = manifests()
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == [
        ("ConfigMap", "coderclaw-config"),
        ("Deployment", "coderclaw-gateway"),
        ("Deployment", "redis"),
        ("Secret", "coderclaw-tokens"),
        ("Service", "coderclaw-gateway"),
        ("Service", "redis"),
    ]
    api = {"Secret": "v1", "ConfigMap": "v1", "Service": "v1", "Deployment": "apps/v1"}
    for doc in docs:
        assert doc["apiVersion"] == api[doc["kind"]]
    secret_keys = set(by_kind("Secret")["coderclaw-tokens"]["stringData"])
    assert secret_keys == set(ENV)
    deployments = by_kind("Deployment")
    for deployment in deployments.values():
        spec = deployment["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        for container in spec["template"]["spec"]["containers"]:
            assert container["name"] and container["image"]
            for env in container.get("env", []):
                ref = env["valueFrom"]["secretKeyRef"]
                assert (ref["name"], ref["key"] in secret_keys) == ("coderclaw-tokens", True)
    for service in by_kind("Service").values():
        selector = service["spec"]["selector"]
        [target] = [
            d for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]  # fmt: skip
        ports = target["spec"]["template"]["spec"]["containers"][0]["ports"]
        for port in service["spec"]["ports"]:
            wanted = port["targetPort"]
            assert any(wanted in (p.get("name"), p["containerPort"]) for p in ports)

    gateway = deployments["coderclaw-gateway"]["spec"]
    assert gateway["replicas"] == 2
    pod = gateway["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["envFrom"] == [{"secretRef": {"name": "coderclaw-tokens"}}]
    [volume] = pod["volumes"]
    assert volume["configMap"]["name"] in by_kind("ConfigMap")
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/etc/coderclaw"}
    # the drain (drainSeconds 10 + 2 s) fits in the grace period
    assert pod["terminationGracePeriodSeconds"] >= 12


def test_no_file_names_a_registry_host() -> None:
    """Images are named without a registry host (a name with a dot or a port before its first
    slash); the gateway's is a placeholder built from the repository."""
    images = [s["image"] for s in compose()["services"].values() if "image" in s]
    for doc in by_kind("Deployment").values():
        images += [c["image"] for c in doc["spec"]["template"]["spec"]["containers"]]
    images += re.findall(r"^FROM\s+(\S+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert "coderclaw-gateway:local" in images
    for image in images:
        first = image.split("/")[0]
        assert "/" not in image or not re.search(r"[.:]", first), image


def test_the_dockerfile_copies_only_what_the_repository_has() -> None:
    for source in re.findall(r"^COPY\s+(.+?)\s+\S+$", (DEPLOY / "Dockerfile").read_text(), re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path


def test_the_entrypoint_puts_the_mounted_config_in_the_state_dir_with_mode_0600(
    tmp_path: Path,
) -> None:
    """A mounted config that others may write becomes the state dir's own 0600 copy (the
    gateway refuses the other), the state dir is 0700, and the command runs."""
    mounted = tmp_path / "mounted.json"
    mounted.write_text("{}")
    mounted.chmod(0o666)
    state = tmp_path / "home" / ".coderclaw"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),
        "CODERCLAW_MOUNTED_CONFIG": str(mounted),
    }
    out = subprocess.run(
        ["sh", str(DEPLOY / "entrypoint.sh"), "echo", "ran"],
        env=env, capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert out.stdout == "ran\n"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    copied = state / "coderclaw.json"
    assert (copied.read_text(), stat.S_IMODE(copied.stat().st_mode)) == ("{}", 0o600)


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (Debian: nginx)")
def test_nginx_accepts_the_load_balancer_config(tmp_path: Path) -> None:
    """``nginx -t`` on the config, with the replicas' compose host names pointed at 127.0.0.1
    (they resolve only on the compose network), and an upstream per replica that streams
    unbuffered."""
    text = (DEPLOY / "nginx.conf").read_text()
    assert re.findall(r"server (gateway-[ab]):18789", text) == ["gateway-a", "gateway-b"]
    assert "proxy_buffering off;" in text
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        re.sub(r"gateway-[ab]:18789", "127.0.0.1:18789", text).replace(
            "pid /tmp/nginx.pid", f"pid {tmp_path}/nginx.pid"
        )
    )
    done = subprocess.run(
        ["nginx", "-t", "-q", "-e", "stderr", "-p", str(tmp_path), "-c", str(conf)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
