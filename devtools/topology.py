"""`docker-compose.yaml` read as a description of local processes.

`make e2e-distributed` does not keep its own copy of the topology: it reads the compose file (each
service's command, the Airflow services' environment and ``env_file``) and runs the same commands
as processes on this machine. The only thing it changes is where things are, through one explicit
:class:`Placement`:

* service host names become ``127.0.0.1`` and each container port a local port, in URLs
  (``postgres`` → ``127.0.0.1:<port>``, ``http://azurite:10000`` → ``http://127.0.0.1:<port>``), in
  command arguments (``0.0.0.0``, ``8765``, ``azureml-emulator``) and in environment values;
* container paths of volumes become local directories (``/opt/azureml-emulator/tls/cert.pem`` →
  ``<volumes>/emulator-data/tls/cert.pem``);
* the program names of the images become local executables (``python`` → this interpreter,
  ``azurite-blob`` → ``node_modules/.bin/azurite-blob``, ``airflow`` → the venv's).

``${VAR:-default}`` references are interpolated like Compose does, from the variables the caller
gives (for example the JWT secret the local run generates).
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devtools.services import HOST, ROOT

COMPOSE_FILE = ROOT / "docker-compose.yaml"
# The image's entrypoint runs `airflow <command>`; these services keep it.
AIRFLOW_IMAGE_ENTRYPOINT = "airflow"
# Done by AirflowCluster.start (`airflow db migrate`), not a long-running component.
INIT_SERVICE = "airflow-init"
WORKER_COMMAND = "celery worker"

_VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")
# A host in a URL or connection string: after "//" or "@", up to the port, path or end.
_URL_HOST = re.compile(r"(?:(?<=//)|(?<=@))(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*)(?::(?P<port>\d+))?(?![A-Za-z0-9.-])")
_ANY_ADDRESS = "0.0.0.0"  # noqa: S104 (a value in the compose file, rewritten to loopback)


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's ``$$``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        current = variables.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op is not None and op.endswith("-") and unset:
            return arg
        if op is not None and op.endswith("?") and unset:
            raise KeyError(f"{name}: {arg or 'required'}")
        return current or ""

    return _VARIABLE.sub(replace, value)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, optional quotes), as Compose reads an ``env_file``."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{path.name}:{number}: expected KEY=VALUE, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


@dataclass(frozen=True)
class Placement:
    """Where the compose services are on this machine.

    :param ports: service name → {container port: local port}; every service a URL or argument
        names must be here.
    :param volumes: named volume → local directory.
    :param executables: program name in the images → local executable.
    """

    ports: Mapping[str, Mapping[int, int]]
    volumes: Mapping[str, Path]
    executables: Mapping[str, str] = field(default_factory=dict)

    def url_hosts(self, text: str) -> str:
        """Rewrite ``service[:port]`` after ``//`` or ``@`` to ``127.0.0.1:<local port>``."""

        def replace(match: re.Match[str]) -> str:
            host, port = match.group("host"), match.group("port")
            if host not in self.ports:
                return match.group(0)
            return f"{HOST}:{self.local_port(host, int(port) if port else None)}"

        return _URL_HOST.sub(replace, text)

    def local_port(self, service: str, container_port: int | None) -> int:
        ports = self.ports[service]
        if container_port is None:
            if len(ports) != 1:
                raise ValueError(f"{service}: a URL without a port is ambiguous between {sorted(ports)}")
            return next(iter(ports.values()))
        if container_port not in ports:
            raise ValueError(f"{service}: no local port for container port {container_port}")
        return ports[container_port]


class ComposeTopology:
    """The services of a compose file and how to run them here."""

    def __init__(self, path: Path = COMPOSE_FILE, variables: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.data: dict[str, Any] = yaml.safe_load(path.read_text())
        self.variables = dict(variables or {})

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        return dict(self.data["services"])

    def service(self, name: str) -> dict[str, Any]:
        return dict(self.services[name])

    # -- Airflow services ----------------------------------------------------------------------

    def airflow_services(self) -> dict[str, str]:
        """Service name → ``airflow`` subcommand, for every service that runs the image's
        ``airflow`` entrypoint (all but ``airflow-init``, which has its own)."""
        return {
            name: " ".join(self.command(name))
            for name, spec in self.services.items()
            if "env_file" in spec and "entrypoint" not in spec
        }

    def component_of(self, command: str) -> str:
        """The service that runs ``airflow <command>``."""
        return next(name for name, cmd in self.airflow_services().items() if cmd == command)

    def env_files(self, name: str) -> list[Path]:
        files = self.service(name).get("env_file") or []
        entries = [files] if isinstance(files, str | dict) else files
        return [self.path.parent / (e["path"] if isinstance(e, dict) else e) for e in entries]

    def shared_settings(self, name: str) -> dict[str, str]:
        """What a service reads from its ``env_file`` (the host-independent Airflow settings)."""
        values: dict[str, str] = {}
        for env_file in self.env_files(name):
            values.update(read_env_file(env_file))
        return values

    def environment(self, name: str, placement: Placement | None = None) -> dict[str, str]:
        """A service's environment as Compose builds it (``env_file`` first, ``environment`` wins),
        interpolated, and placed on this machine when ``placement`` is given."""
        env = self.shared_settings(name)
        raw = self.service(name).get("environment") or {}
        if isinstance(raw, list):
            raw = dict(item.split("=", 1) for item in raw)
        env.update({key: interpolate(str(value), self.variables) for key, value in raw.items()})
        if placement is None:
            return env
        mounts = self.mounts(name, placement)
        return {key: self._place(value, placement, mounts) for key, value in env.items()}

    # -- commands ------------------------------------------------------------------------------

    def command(self, name: str) -> list[str]:
        """A service's command as a list (a string command is split like a shell would)."""
        command = self.service(name).get("command") or []
        return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]

    def argv(self, name: str, placement: Placement) -> list[str]:
        """The service's entrypoint + command, placed on this machine."""
        spec = self.service(name)
        entrypoint = spec.get("entrypoint")
        if entrypoint is None:
            entrypoint = [] if "env_file" not in spec else [AIRFLOW_IMAGE_ENTRYPOINT]
        elif isinstance(entrypoint, str):
            entrypoint = shlex.split(entrypoint)
        argv = [str(part) for part in entrypoint] + self.command(name)
        mounts = self.mounts(name, placement)
        own_ports = placement.ports.get(name, {})
        placed = []
        for position, arg in enumerate(argv):
            if position == 0 and arg in placement.executables:
                placed.append(placement.executables[arg])
            elif arg == _ANY_ADDRESS or arg in placement.ports:
                placed.append(HOST)
            elif arg.isdigit() and int(arg) in own_ports:
                placed.append(str(own_ports[int(arg)]))
            else:
                placed.append(self._place(arg, placement, mounts))
        return placed

    def mounts(self, name: str, placement: Placement) -> dict[str, Path]:
        """Container path → local path, for the service's volumes."""
        mounts: dict[str, Path] = {}
        for volume in self.service(name).get("volumes") or []:
            source, target = interpolate(str(volume), self.variables).split(":")[:2]
            if source.startswith((".", "/")):
                mounts[target] = (self.path.parent / source).resolve()
            else:
                mounts[target] = placement.volumes[source]
        return mounts

    def _place(self, value: str, placement: Placement, mounts: Mapping[str, Path]) -> str:
        value = placement.url_hosts(value)
        # Longest container path first: /opt/airflow/dags before /opt/airflow.
        for target in sorted(mounts, key=len, reverse=True):
            value = re.sub(rf"{re.escape(target)}(?=/|$|[\"';])", str(mounts[target]), value)
        return value


def default_executables() -> dict[str, str]:
    """The programs the images run, as installed here (venv, node_modules)."""
    bin_dir = Path(sys.executable).parent
    return {
        "python": sys.executable,
        "airflow": str(bin_dir / "airflow"),
        "azurite-blob": str(ROOT / "node_modules" / ".bin" / "azurite-blob"),
    }
