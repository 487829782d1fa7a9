"""Work pools: `alignflow deploy` registers the served deployments on a pool, and a real process worker runs one.

The end-to-end test starts a real `prefect server` on loopback (as
tests/test_deployments.py does), `alignflow deploy --pool test-pool`, and a
real `prefect worker start --pool test-pool --type process`, then runs the
tiny evaluate recipe through `evaluate/default` on that worker. The
Kubernetes example (deployments/kubernetes/) is checked offline only: its
template is validated as Prefect's server validates a pool's, against the
kubernetes worker's own default template, and rendered as a worker renders it.
"""

import json
import re
import subprocess
import uuid
from pathlib import Path

import psutil
import pytest
import yaml
from prefect.exceptions import ObjectNotFound

from flows.cli import main
from flows.deploy import KUBERNETES_TEMPLATE, pool_deployments
from flows.serve import DEFAULT_FILE, build_deployments, load_serve_file
from methods import METHODS
from pipeline_lib.core.servers import free_port, stop_group, wait_healthy
from processes import command_line
from test_deployments import BIN, _api, _environment, _final_state, _start, _start_prefect_server, _wait_for

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "evaluate-tiny.yaml"
IMAGE = "registry.example.com/alignflow:test"
PREFECT_KUBERNETES_DEFAULT = (
    Path(__import__("prefect").__file__).parent
    / "server" / "api" / "collections_data" / "views" / "aggregate-worker-metadata.json"
)  # fmt: skip


def _tiny_file(tmp_path: Path) -> Path:
    """One cheap deployment and no concurrency limits (the session's Prefect API is shared by other tests)."""
    path = tmp_path / "deployments.yaml"
    path.write_text(yaml.safe_dump({"every_method": False, "deployments": [{"name": "tiny", "recipe": str(TINY)}]}))
    return path


def _one_line_error(capsys, argv: list[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_the_pool_deployments_are_the_served_deployments(tmp_path):
    spec = load_serve_file(DEFAULT_FILE)
    served = {(d.flow_name, d.name): d for d in build_deployments(spec)}
    pooled = {(d.flow_name, d.name): d for d in pool_deployments(spec, "gpus", Path("/opt/alignflow"))}
    assert set(pooled) == set(served)
    entrypoints = {METHODS[m].load_flow().name: METHODS[m].flow_entrypoint for m in METHODS}
    for key, deployment in pooled.items():
        same = served[key]
        assert (deployment.schedules, deployment.tags, deployment.description) == (
            same.schedules, same.tags, same.description
        ), key  # fmt: skip
        assert deployment.parameters["overrides"] == same.parameters["overrides"]
        # The recipe and the code, at --code-dir on the workers.
        assert deployment.parameters["recipe"] == str(
            Path("/opt/alignflow") / Path(same.parameters["recipe"]).relative_to(REPO)
        )
        assert deployment.work_pool_name == "gpus"
        assert deployment.entrypoint == entrypoints[key[0]]
        assert deployment.storage.to_pull_step() == {
            "prefect.deployments.steps.set_working_directory": {"directory": "/opt/alignflow"}
        }
        assert deployment.job_variables == {"env": {"PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true"}}
    assert pooled["seft", "nightly"].schedules[0].schedule.cron == "0 2 * * *"


def test_bad_deploy_inputs_are_one_line_errors(tmp_path, capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    bad = tmp_path / "bad.yaml"
    bad.write_text("deployments: [{name: x, recipe: configs/nope.yaml}]")
    _one_line_error(capsys, ["deploy", "--pool", "p", "--file", str(bad)], "nope.yaml")
    bad.write_text("deployments: [")
    _one_line_error(capsys, ["deploy", "--pool", "p", "--file", str(bad)], "not valid YAML")
    tiny = _tiny_file(tmp_path)
    _one_line_error(capsys, ["deploy", "--pool", "p", "--file", str(tiny), "--code-dir", "rel"], "absolute path")
    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        _one_line_error(capsys, ["deploy", "--pool", "p", "--file", str(tiny)], "is not reachable")

    # Against the session's Prefect API: a Kubernetes pool made from the example template. The server
    # validates the template as `prefect work-pool create --base-job-template` would, and each
    # deployment's job variables against it.
    pool = f"k8s-{uuid.uuid4().hex[:8]}"
    argv = ["deploy", "--pool", pool, "--file", str(tiny)]
    assert main([*argv, "--pool-type", "kubernetes", "--image", IMAGE, "--code-dir", "/opt/alignflow"]) == 0
    out = capsys.readouterr().out
    assert f"work pool {pool!r} (kubernetes): created" in out and "deployed evaluate/tiny" in out
    deployment = _api(lambda c: c.read_deployment_by_name("evaluate/tiny"))
    assert deployment.work_pool_name == pool and deployment.job_variables["image"] == IMAGE
    step = {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/alignflow"}}
    assert deployment.pull_steps == [step]
    assert deployment.parameters["recipe"] == "/opt/alignflow/configs/evaluate-tiny.yaml"

    _one_line_error(capsys, [*argv, "--pool-type", "process"], "exists with type 'kubernetes'")
    _one_line_error(capsys, argv, "give --image")
    # A process pool runs in the worker's environment: no image, and nothing is created.
    process_pool = f"proc-{uuid.uuid4().hex[:8]}"
    _one_line_error(
        capsys, ["deploy", "--pool", process_pool, "--file", str(tiny), "--image", IMAGE], "leave out --image"
    )
    with pytest.raises(ObjectNotFound):
        _api(lambda c: c.read_work_pool(process_pool))


def _placeholders(value) -> set[str]:
    return set(re.findall(r"\{\{\s*([\w.-]+)\s*\}\}", json.dumps(value)))


def test_the_kubernetes_template_is_a_gpu_job_on_the_shared_home():
    from prefect.server.schemas.actions import validate_base_job_template
    from prefect.utilities.templating import apply_values

    template = json.loads(KUBERNETES_TEMPLATE.read_text())
    validate_base_job_template(template)  # what the server checks when the pool is created
    # Every setting of the kubernetes worker's own default template (shipped with Prefect) is kept.
    default = json.loads(PREFECT_KUBERNETES_DEFAULT.read_text())["prefect-kubernetes"]["kubernetes"]
    default = default["default_base_job_configuration"]
    assert set(default["job_configuration"]) <= set(template["job_configuration"])
    variables = template["variables"]["properties"]
    assert set(default["variables"]["properties"]) <= set(variables)
    assert _placeholders(template["job_configuration"]) <= set(variables)

    # Rendered as a worker renders it: the pool's defaults, then the deployment's image.
    values = {name: spec["default"] for name, spec in variables.items() if "default" in spec}
    values |= {"image": IMAGE, "name": "run", "env": {"EXTRA": "1"}, "labels": {}}
    job = apply_values(template["job_configuration"], values)
    assert job["env"] == {"EXTRA": "1"} and job["namespace"] == "alignflow"
    pod = job["job_manifest"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == IMAGE
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e for e in container["env"]}
    assert {"ALIGNFLOW_HOME", "MLFLOW_TRACKING_URI", "PREFECT_API_URL"} <= set(env)
    home = env["ALIGNFLOW_HOME"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts[home]]["persistentVolumeClaim"]["claimName"] == "alignflow-home"
    claim = yaml.safe_load((KUBERNETES_TEMPLATE.parent / "home-pvc.yaml").read_text())
    assert claim["metadata"]["name"] == "alignflow-home" and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert env["PREFECT_LOCAL_STORAGE_PATH"]["value"] == f"{home}/prefect/results"
    # API keys come from a Secret, by reference; no value of one is in the template.
    assert container["envFrom"] == [{"secretRef": {"name": "alignflow-api-keys", "optional": True}}]
    for name, entry in env.items():
        assert not re.search(r"KEY|TOKEN|SECRET|PASSWORD", name) or "value" not in entry, name


def _leftovers(home: Path) -> list[psutil.Process]:
    """Processes this test started (server, worker, flow runs): every one has ``home`` in its environment."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("ALIGNFLOW_HOME") == str(home):
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return found


@pytest.mark.integration
def test_a_process_worker_runs_a_deployment_of_the_pool(tmp_path, capsys):
    home = tmp_path / "home"
    worker_log = tmp_path / "worker.log"
    server, api_url, server_log = _start_prefect_server(tmp_path, home)
    worker = None
    try:
        assert wait_healthy(f"{api_url}/health", server, 120), server_log.read_text()[-3000:]
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        # `alignflow deploy --pool test-pool --home HOME`, in this process: a subprocess would spend
        # 15-30 s importing what this one has imported already.
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            assert main(["deploy", "--pool", "test-pool", "--home", str(home)]) == 0
        assert "work pool 'test-pool' (process): created" in capsys.readouterr().out
        env = _environment(home, api_url)
        # A worker as on another machine: its own working directory, polling every second.
        with open(worker_log, "w") as out:
            worker = subprocess.Popen(
                [str(BIN / "prefect"), "worker", "start", "--pool", "test-pool", "--type", "process", "--limit", "1"],
                env=env | {"PREFECT_WORKER_QUERY_SECONDS": "1"},
                cwd=tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            registered = _api(lambda c: c.read_deployments())
            served = build_deployments(load_serve_file(DEFAULT_FILE))
            flows = {f.id: f.name for f in _api(lambda c: c.read_flows())}
            assert {(flows[d.flow_id], d.name) for d in registered} == {(d.flow_name, d.name) for d in served}
            assert {d.work_pool_name for d in registered} == {"test-pool"}

            flow_run = run_deployment(
                "evaluate/default", parameters={"recipe": str(TINY), "overrides": []}, timeout=0
            )
            done = _wait_for("the flow run", lambda: _final_state(flow_run.id), 300, (worker, worker_log), (server, server_log))
            assert done.is_completed(), f"{done}\n{worker_log.read_text()[-4000:]}"
            flow_run = _api(lambda c: c.read_flow_run(flow_run.id))
            assert flow_run.work_pool_name == "test-pool"
            assert f"submitting flow run '{flow_run.id}'" in worker_log.read_text()
            # Its result, persisted under the shared home, names the run folder it made there.
            result = flow_run.state.result()
            run_dir = Path(result["run_dir"])
            assert run_dir.parent == home / "runs" and (run_dir / "round-0" / "score").is_dir()
            assert Path(flow_run.state.data.storage_key).is_relative_to(home / "prefect" / "results")
            assert 0 in result["rounds"]
    finally:
        for process in (worker, server):
            if process is not None:
                stop_group(process)
    leftovers = [(process, command_line(process)) for process in _leftovers(home)]
    for process, _ in leftovers:
        process.kill()
    assert not leftovers, [command for _, command in leftovers]
