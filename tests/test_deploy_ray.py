"""deploy/ray/rayjob-index.yaml is a KubeRay RayJob whose entrypoint is a valid `mmsearch index --engine ray` run on
GPU workers writing to a Milvus server, for the Ray version we lock."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from mmsearch.cli import build_parser

yaml = pytest.importorskip("yaml")

MANIFEST = Path(__file__).resolve().parents[1] / "deploy" / "ray" / "rayjob-index.yaml"


@pytest.fixture(scope="module")
def job() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def test_manifest_is_a_kuberay_rayjob(job):
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_entrypoint_is_a_valid_ray_index_command_against_a_milvus_server(job):
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "mmsearch"
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.engine, args.write) == ("index", "ray", "upsert")
    assert args.milvus_uri.startswith("http://") and args.milvus_uri.endswith(":19530")
    assert args.ray_address is None  # the job's RAY_ADDRESS names the cluster


def test_gpu_workers_match_the_encoder_actors(job):
    args = build_parser().parse_args(shlex.split(job["spec"]["entrypoint"])[1:])
    groups = {g["groupName"]: g for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
    gpu = groups["gpu"]
    (container,) = gpu["template"]["spec"]["containers"]
    gpus_per_pod = int(container["resources"]["limits"]["nvidia.com/gpu"])
    assert gpus_per_pod >= 1
    assert args.encode_actors == gpu["replicas"] * gpus_per_pod


def test_cluster_runs_the_locked_ray_version(job):
    ray = pytest.importorskip("ray")
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == ray.__version__
