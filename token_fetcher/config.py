"""The server's YAML configuration: clusters, limits and listening addresses.

Relative paths are resolved against the config file's folder. Every error names the
key it is about.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from legacy_parser import compat
from legacy_parser.cluster import PARSERS, PYTHON_PARSER
from legacy_parser.isolation import ISOLATION_MODES, STRICT, SandboxLimits
from legacy_parser.limits import ResultCaps

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_METRICS = "127.0.0.1:9464"
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
PYTHON2_MODES = ("auto", "off")


class ConfigError(ValueError):
    """A configuration problem: names the file and the key."""


@dataclass(frozen=True)
class ParserSetup:
    """What a Pinball deployment's YAML says about parsing."""

    parser: str
    parser_params: dict[str, Any]
    # Pinball's server sets PinballConfig.DEFAULT_EMAIL from this before loading definitions.
    default_email: str = ""


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    repo: str
    # Either a Pinball YAML file (read at every load, and watched) or parser + params.
    pinball_config: str = ""
    parser: str = PYTHON_PARSER
    parser_params: dict[str, Any] = field(default_factory=dict)
    default_email: str = ""
    # Re-parse this often even when no file changed, so that layouts computed from the
    # clock or outside data stay fresh; 0 re-parses only on changes.
    reparse_interval_seconds: float = 0.0
    # "auto": Python 2 definition modules are translated and loaded; "off": they fail.
    python2_definitions: str = "auto"
    # Third-party modules that definitions import and a parse never needs: inert stubs.
    stub_modules: tuple[str, ...] = ()

    def parser_setup(self) -> ParserSetup:
        if self.pinball_config:
            return read_pinball_config(self.pinball_config)
        return ParserSetup(self.parser, self.parser_params, self.default_email)


@dataclass(frozen=True)
class TlsConfig:
    cert_file: str
    key_file: str
    # When set, clients must present a certificate signed by this CA (mutual TLS).
    client_ca_file: str = ""


@dataclass(frozen=True)
class ServerConfig:
    clusters: dict[str, ClusterConfig]
    listen: str = DEFAULT_LISTEN
    metrics: str = DEFAULT_METRICS
    poll_interval_seconds: float = 1.0
    state_dir: str = ""
    history_versions: int = 10
    sandbox: SandboxLimits = SandboxLimits()
    reload_enabled: bool = True
    reflection_enabled: bool = True
    shutdown_grace_seconds: float = 10.0
    server_threads: int = 16
    # Each open watch stream holds a thread of its own, on top of server_threads.
    max_watches: int = 32
    max_concurrent_rpcs: int = 256
    max_message_bytes: int = 64 * 1024 * 1024
    tls: TlsConfig | None = None


def default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "state")
    return os.path.join(base, "token-fetcher")


class _Reader:
    """Pops keys off a mapping with type checks; leftover keys are reported as unknown."""

    def __init__(self, data: Any, where: str, source: str) -> None:
        self.where = where
        self.source = source
        if not isinstance(data, dict):
            self.fail(f"must be a mapping, got {type(data).__name__}")
        self.data = dict(data)

    def fail(self, problem: str) -> None:
        raise ConfigError(f"{self.source}: {self.where}: {problem}")

    def take(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        if key not in self.data:
            return default
        value = self.data.pop(key)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int: True is no number of seconds.
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{self.source}: {self.where}.{key}: expected {names}, "
                              f"got {value!r}")
        return value

    def positive(self, key: str, kind: type, default: Any) -> Any:
        value = self.take(key, (int, float) if kind is float else kind, default)
        if value <= 0:
            raise ConfigError(f"{self.source}: {self.where}.{key}: must be positive, "
                              f"got {value!r}")
        return kind(value)

    def done(self) -> None:
        if self.data:
            unknown = ", ".join(sorted(map(str, self.data)))
            self.fail(f"unknown key(s): {unknown}")


def _address(reader: _Reader, key: str, default: str, optional: bool = False) -> str:
    value = reader.take(key, (str, type(None)), default)
    if value is None or value == "":
        if optional:
            return ""
        reader.fail(f"{key} must be HOST:PORT")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{reader.source}: {reader.where}.{key}: expected HOST:PORT, "
                          f"got {value!r}")
    return value


def stub_module_problem(module: object) -> str | None:
    """Why ``module`` cannot stand in as an inert stub in a parse, or None."""
    if not isinstance(module, str) or not _MODULE_NAME.match(module):
        return f"{module!r} is not a dotted module name"
    if compat.provides(module):
        return f"{module!r} is one of the Pinball shims; it cannot be a stub"
    return None


def _stub_modules(reader: _Reader) -> tuple[str, ...]:
    names = reader.take("stub_modules", list, [])
    for module in names:
        if problem := stub_module_problem(module):
            reader.fail(f"stub_modules: {problem}")
    return tuple(names)


def load_config(path: str | os.PathLike) -> ServerConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError as error:  # a ValueError, not a YAMLError: e.g. half-written
        raise ConfigError(f"{path}: not UTF-8 text: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from None
    return parse_config(data, path.resolve().parent, str(path))


def parse_config(data: Any, base: Path, source: str = "config") -> ServerConfig:
    top = _Reader(data, "top level", source)

    def resolve(value: str) -> str:
        return str((base / os.path.expanduser(value)).resolve()) if value else ""

    clusters_data = top.take("clusters", dict, None)
    if not clusters_data:
        top.fail("clusters: at least one cluster is required")
    clusters = {}
    for name, cluster_data in clusters_data.items():
        if not isinstance(name, str) or not _CLUSTER_NAME.match(name):
            top.fail(f"clusters: invalid cluster name {name!r} (letters, digits, _ . -)")
        reader = _Reader(cluster_data, f"clusters.{name}", source)
        repo = reader.take("repo", str, "")
        if not repo:
            reader.fail("repo is required (the legacy repo root, put on sys.path)")
        pinball_config = reader.take("pinball_config", str, "")
        parser = reader.take("parser", str, "")
        params = reader.take("parser_params", dict, None)
        default_email = reader.take("default_email", str, "")
        reparse_interval = reader.take("reparse_interval_seconds", (int, float), None)
        if reparse_interval is not None and reparse_interval <= 0:
            reader.fail(f"reparse_interval_seconds must be positive, got {reparse_interval!r} "
                        "(leave it out to re-parse only when files change)")
        if pinball_config and (parser or params is not None or default_email):
            reader.fail("give either pinball_config or parser/parser_params/default_email, "
                        "not both")
        if not pinball_config and not parser:
            reader.fail("pinball_config (a Pinball YAML) or parser + parser_params is required")
        if parser and parser not in PARSERS:
            reader.fail(f"parser: unknown parser {parser!r}; expected one of {', '.join(PARSERS)}")
        python2 = reader.take("python2_definitions", str, "auto")
        if python2 not in PYTHON2_MODES:
            reader.fail(f"python2_definitions: expected auto or off, got {python2!r}")
        stub_modules = _stub_modules(reader)
        reader.done()
        clusters[name] = ClusterConfig(name=name, repo=resolve(repo),
                                       pinball_config=resolve(pinball_config),
                                       parser=parser or PYTHON_PARSER,
                                       parser_params=params or {},
                                       default_email=default_email,
                                       reparse_interval_seconds=float(reparse_interval or 0),
                                       python2_definitions=python2,
                                       stub_modules=stub_modules)

    sandbox = _Reader(top.take("sandbox", dict, {}), "sandbox", source)
    isolation = sandbox.take("isolation", str, STRICT)
    if isolation not in ISOLATION_MODES:
        sandbox.fail(f"isolation: expected one of {', '.join(ISOLATION_MODES)}, "
                     f"got {isolation!r}")
    pass_env = sandbox.take("pass_env", list, [])
    if not all(isinstance(name, str) and name for name in pass_env):
        sandbox.fail(f"pass_env: expected a list of environment variable names, got {pass_env!r}")
    limits = SandboxLimits(
        timeout_seconds=sandbox.positive("timeout_seconds", float, 60.0),
        memory_bytes=sandbox.positive("memory_mb", int, 2048) * 2**20,
        workers=sandbox.positive("workers", int, 2),
        max_processes=sandbox.positive("max_processes", int, 64),
        max_open_files=sandbox.positive("max_open_files", int, 256),
        max_file_bytes=sandbox.positive("max_file_mb", int, 64) * 2**20,
        tmpfs_bytes=sandbox.positive("tmpfs_mb", int, 64) * 2**20,
        max_result_bytes=sandbox.positive("max_result_mb", int, 256) * 2**20,
        caps=ResultCaps(
            max_jobs_per_workflow=sandbox.positive("max_jobs_per_workflow", int, 10_000),
            max_command_bytes=sandbox.positive("max_command_kb", int, 1024) * 2**10),
        isolation=isolation,
        pass_env=tuple(pass_env),
        bwrap=resolve(sandbox.take("bwrap", str, "")),
    )
    sandbox.done()

    tls = None
    tls_data = top.take("tls", (dict, type(None)), None)
    if tls_data:
        tls_reader = _Reader(tls_data, "tls", source)
        cert = tls_reader.take("cert_file", str, "")
        key = tls_reader.take("key_file", str, "")
        if not cert or not key:
            tls_reader.fail("cert_file and key_file are both required")
        tls = TlsConfig(resolve(cert), resolve(key),
                        resolve(tls_reader.take("client_ca_file", str, "")))
        tls_reader.done()

    config = ServerConfig(
        clusters=clusters,
        listen=_address(top, "listen", DEFAULT_LISTEN),
        metrics=_address(top, "metrics", DEFAULT_METRICS, optional=True),
        poll_interval_seconds=top.positive("poll_interval_seconds", float, 1.0),
        state_dir=resolve(top.take("state_dir", str, "")) or default_state_dir(),
        history_versions=top.positive("history_versions", int, 10),
        sandbox=limits,
        reload_enabled=top.take("reload_enabled", bool, True),
        reflection_enabled=top.take("reflection_enabled", bool, True),
        shutdown_grace_seconds=top.positive("shutdown_grace_seconds", float, 10.0),
        server_threads=top.positive("server_threads", int, 16),
        max_watches=top.positive("max_watches", int, 32),
        max_concurrent_rpcs=top.positive("max_concurrent_rpcs", int, 256),
        max_message_bytes=top.positive("max_message_bytes", int, 64 * 1024 * 1024),
        tls=tls,
    )
    top.done()
    return config


def read_pinball_config(path: str) -> ParserSetup:
    """A Pinball YAML's parser, parser_params and default_email, as Pinball reads them."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError as error:  # a ValueError, not a YAMLError: e.g. half-written
        raise ConfigError(f"{path}: not UTF-8 text: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with parser and parser_params")
    parser = data.get("parser", PYTHON_PARSER)
    params = data.get("parser_params") or {}
    if parser not in PARSERS:
        raise ConfigError(f"{path}: parser: unknown parser {parser!r}; expected one of "
                          f"{', '.join(PARSERS)}")
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: parser_params: expected a mapping, got {params!r}")
    default_email = data.get("default_email") or ""
    if not isinstance(default_email, str):
        raise ConfigError(f"{path}: default_email: expected a string, got {default_email!r}")
    return ParserSetup(parser, params, default_email)
