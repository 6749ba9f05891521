"""cluster/: every file parses; launcher YAMLs validate against the schema Ray ships; KubeRay
manifests carry the fields KubeRay requires; the RayJob runs a sweep file that exists and
validates; runtime_env.yaml uses only runtime_env fields and agrees with didray.jobs."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.runtime_env import RuntimeEnv

from didray import jobs
from didray.config.load import load_sweep
from didray.sweep import RAY_ENV

ROOT = Path(__file__).parents[2]
CLUSTER = ROOT / "cluster"
YAMLS = sorted(CLUSTER.glob("*.yaml"))
# Every cluster launcher file (it names a cloud provider), so a new one is checked too.
LAUNCHERS = [p for p in YAMLS if "provider" in yaml.safe_load(p.read_text())]
TOKEN = "~/.ray/auth_token"
KUBERAY = {CLUSTER / "kuberay-raycluster.yaml": "RayCluster",
           CLUSTER / "kuberay-rayjob.yaml": "RayJob",
           CLUSTER / "kuberay-rayjob-qwen3.yaml": "RayJob"}
RAYJOBS = [path for path, kind in KUBERAY.items() if kind == "RayJob"]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def at(doc: dict, path: str):
    """doc at a dotted path ('spec.headGroupSpec.template'); KeyError names the path."""
    node = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"missing {path} (at {part!r})")
        node = node[part]
    return node


def test_every_yaml_parses():
    assert {p.name for p in LAUNCHERS} >= {"aws-gpu.yaml", "gcp-gpu.yaml"}
    assert {p.name for p in YAMLS} >= {*(p.name for p in KUBERAY), "runtime_env.yaml"}
    for path in YAMLS:
        docs = list(yaml.safe_load_all(path.read_text()))
        assert docs and all(isinstance(d, dict) for d in docs), path


@pytest.fixture(scope="module")
def ray_schema() -> dict:
    return json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_config(path, ray_schema):
    config = load(path)
    jsonschema.validate(config, ray_schema)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head is a CPU node"
    workers = {n: t for n, t in types.items() if n != config["head_node_type"]}
    assert any(t["resources"].get("GPU", 0) >= 1 for t in workers.values()), "no GPU workers"
    for name, t in workers.items():  # autoscaling bounds
        assert 0 <= t["min_workers"] <= t["max_workers"] <= config["max_workers"], name
    setup = config["setup_commands"]
    torch = next(i for i, c in enumerate(setup) if "torch" in c)
    project = next(i for i, c in enumerate(setup) if "pip install" in c and "didray" in c)
    assert torch < project, "torch must be installed before the project"
    assert config["file_mounts"] == {"~/didray": ".", TOKEN: TOKEN}
    images = [config["docker"]["head_image"], config["docker"]["worker_image"]]
    assert all(f":{ray.__version__}-" in image for image in images), "client/cluster Ray differ"


def token_setup_problems(config: dict) -> list[str]:
    """What leaves a launcher's cluster open to anyone who reaches it: Ray 2.60's `ray start`
    requires a token only in RAY_AUTH_MODE=token (set on every node), and each node needs the
    token, the client's copied by file_mounts (the autoscaler copies the head's to workers)."""
    problems = [f"{key}: a `ray start` without RAY_AUTH_MODE=token before it"
                for key in ("head_start_ray_commands", "worker_start_ray_commands")
                for command in config[key] if "ray start" in command
                and not re.search(r"\bRAY_AUTH_MODE=token\b.*\bray start\b", command, re.S)]
    if not any("ray start" in c for c in config["worker_start_ray_commands"]):
        problems.append("worker_start_ray_commands: no `ray start`")
    if config["file_mounts"].get(TOKEN) != TOKEN:
        problems.append(f"file_mounts: {TOKEN} is not copied to the nodes")
    return problems


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_requires_a_token(path):
    assert token_setup_problems(load(path)) == []


def test_a_launcher_without_token_setup_fails():
    config = load(CLUSTER / "aws-gpu.yaml")
    open_workers = {**config, "worker_start_ray_commands": [
        c.replace("export RAY_AUTH_MODE=token;", "") for c in config["worker_start_ray_commands"]]}
    assert token_setup_problems(open_workers) == [
        "worker_start_ray_commands: a `ray start` without RAY_AUTH_MODE=token before it"]
    no_token = {**config, "file_mounts": {"~/didray": "."}}
    assert token_setup_problems(no_token) == [f"file_mounts: {TOKEN} is not copied to the nodes"]


# What KubeRay needs of each manifest, as (path, check) pairs; {group} runs per worker group.
CLUSTER_SPEC = [
    ("headGroupSpec.rayStartParams", lambda v: isinstance(v, dict)),
    ("headGroupSpec.template.spec.containers", lambda v: len(v) >= 1 and v[0].get("image")),
    ("workerGroupSpecs", lambda v: isinstance(v, list) and len(v) >= 1),
]
WORKER_GROUP = [
    ("groupName", lambda v: isinstance(v, str) and v),
    ("rayStartParams", lambda v: isinstance(v, dict)),
    ("replicas", lambda v: isinstance(v, int)),
    ("minReplicas", lambda v: isinstance(v, int)),
    ("maxReplicas", lambda v: isinstance(v, int)),
    ("template.spec.containers", lambda v: len(v) >= 1 and v[0].get("image")),
]


def check_cluster_spec(spec: dict) -> None:
    for path, ok in CLUSTER_SPEC:
        assert ok(at(spec, path)), path
    assert at(spec, "rayVersion") == ray.__version__, "client/cluster Ray differ"
    for group in spec["workerGroupSpecs"]:
        for path, ok in WORKER_GROUP:
            assert ok(at(group, path)), f"workerGroupSpecs[{group.get('groupName')}].{path}"
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1, "GPU workers"


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_manifest(path):
    doc, kind = load(path), KUBERAY[path]
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", kind)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", at(doc, "metadata.name"))
    if kind == "RayJob":
        assert at(doc, "spec.entrypoint")
        check_cluster_spec(at(doc, "spec.rayClusterSpec"))
    else:
        check_cluster_spec(doc["spec"])


@pytest.mark.parametrize("path", RAYJOBS, ids=lambda p: p.name)
def test_rayjob_runs_a_valid_sweep_file(path):
    entrypoint = load(path)["spec"]["entrypoint"]
    assert "didray run " in entrypoint
    files = re.findall(r"\bsweeps/[\w.-]+\.ya?ml\b", entrypoint)
    assert len(files) == 1, entrypoint
    assert load_sweep(ROOT / files[0]).trial_count() >= 1


def test_runtime_env_fields(monkeypatch):
    env = load(CLUSTER / "runtime_env.yaml")
    assert set(env) <= set(RuntimeEnv.known_fields), set(env) - set(RuntimeEnv.known_fields)
    monkeypatch.chdir(ROOT)  # working_dir "." is the repository root
    RuntimeEnv(**env)  # Ray's own validation of each field's value
    assert env["excludes"] == jobs.EXCLUDES
    # A job's env_vars must not repeat the driver's, or Ray refuses to merge the two.
    assert not set(env["env_vars"]) & set(RAY_ENV)
    assert all(isinstance(v, str) for v in env["env_vars"].values())
    for path in RAYJOBS:
        rayjob_env = yaml.safe_load(load(path)["spec"]["runtimeEnvYAML"])
        assert rayjob_env == {"env_vars": env["env_vars"]}, path


def test_qwen3_rayjob_fits_its_sweep():
    """The Qwen3 RayJob holds at least one trial's GPUs and every sampler actor's."""
    spec = at(load(CLUSTER / "kuberay-rayjob-qwen3.yaml"), "spec")
    sweep = load_sweep(ROOT / re.findall(r"sweeps/[\w.-]+\.yaml", spec["entrypoint"])[0])
    assert sweep.name == "qwen3-4b-ultrafeedback" and sweep.sampler.backend == "vllm"
    gpus = sum(g["maxReplicas"] for g in spec["rayClusterSpec"]["workerGroupSpecs"])
    trial = sweep.scaling.workers_per_trial * sweep.scaling.gpus_per_worker
    assert gpus >= max(trial * sweep.scaling.max_concurrent_trials,
                       sweep.sampler.actors * sweep.sampler.gpus_per_actor)


# The GPU images install vLLM pinned with the torch it requires, the same everywhere.
PINS = re.compile(r"pip install [^\n]*torch==([\d.]+) vllm==([\d.]+)")
EXTRAS = re.compile(r"pip install [^\n]*-e [^\n]*didray\[hf,vllm\]")


def test_gpu_images_install_vllm():
    texts = {p.name: p.read_text() for p in [CLUSTER / "Dockerfile", *LAUNCHERS]}
    pins = {name: PINS.findall(text) for name, text in texts.items()}
    assert all(len(found) == 1 for found in pins.values()), pins
    assert len({found[0] for found in pins.values()}) == 1, f"pins differ: {pins}"
    assert all(EXTRAS.search(text) for text in texts.values()), "project without [hf,vllm]"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(d.startswith("vllm") for d in extras["vllm"])


def test_grep_finds_the_vllm_install():
    found = subprocess.run(["grep", "-rn", "vllm", "cluster/"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout
    assert "cluster/Dockerfile:" in found and "vllm==" in found
