"""Settings: one pydantic-settings class, read once at start-up and passed down.

Every field is documented in the README's configuration table; the environment variable is the field
name in upper case with the ``SESSIONS_`` prefix (``redis_url`` -> ``SESSIONS_REDIS_URL``).
"""

from __future__ import annotations

import ipaddress
import json
from enum import Enum
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class LogFormat(str, Enum):
    JSON = "json"
    CONSOLE = "console"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SESSIONS_", extra="ignore")

    # --- Redis -------------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description="Data Redis URL; `serve` and `worker` need it (or Sentinels or Cluster "
        "nodes). `sessionctl dev` starts a redis-server under data_dir and sets it.",
    )
    queue_redis_url: str | None = Field(
        default=None, description="Queue (arq) Redis URL. Unset: same as redis_url."
    )
    redis_cluster: bool = Field(default=False, description="Treat the data Redis as a Cluster.")
    redis_cluster_nodes: str = Field(
        default="",
        description="Comma-separated host:port startup nodes for cluster mode "
        "(redis_url's host is used when empty).",
    )
    redis_sentinels: str = Field(
        default="",
        description="Comma-separated host:port of Sentinels: the data Redis (and the queue, "
        "unless queue_redis_url is set) is then the master they name.",
    )
    redis_sentinel_master: str = Field(
        default="mymaster", description="Name of the master the Sentinels monitor."
    )
    redis_password: SecretStr | None = Field(
        default=None,
        description="Redis password, apart from the URL (which then needs no encoding of it): "
        "for the master found through Sentinel, and for the data Redis and the queue on it "
        "when their URL carries none.",
    )
    key_prefix: str = Field(
        default="sess",
        description="Global prefix of every data key; also names the deployment's queue.",
    )
    index_shards: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Shards of each tenant's session index (raise on Redis Cluster).",
    )
    data_dir: Path = Field(
        default=Path(".data"), description="Folder of the embedded Redis (dev mode only)."
    )

    # --- Sessions ----------------------------------------------------------------------------
    default_ttl_seconds: int = Field(
        default=7 * 24 * 3600, ge=1, description="Sliding TTL of a non-infinite session."
    )
    max_message_bytes: int = Field(
        default=256 * 1024, ge=1, description="Largest event payload accepted, in bytes."
    )
    max_sessions_per_tenant: int = Field(
        default=100_000, ge=1, description="Default cap of live sessions per tenant."
    )
    max_pending_turns: int = Field(
        default=100,
        ge=1,
        description="Turns one session may have waiting for a reply; one more send gets 429.",
    )
    live_window_seconds: int = Field(
        default=300, ge=1, description="Live events (deltas, turn markers) kept this long."
    )
    live_window_events: int = Field(
        default=10_000, ge=100, description="Live events kept per live shard, at most (about)."
    )
    live_shards: int = Field(
        default=1, ge=1, le=64, description="Live-event streams per tenant (spread on a Cluster)."
    )
    max_streams_per_tenant: int = Field(
        default=500, ge=1, description="Open event streams per tenant and API process."
    )
    rate_limit_per_second: float = Field(
        default=50.0, ge=0, description="Default requests per second per tenant (0 = off)."
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Time allowed to receive a request body; a slower upload gets 408.",
    )

    # --- Security ----------------------------------------------------------------------------
    admin_key: SecretStr | None = Field(
        default=None, description="Key for the tenant administration endpoints."
    )
    proxy_hops: int = Field(
        default=0,
        ge=0,
        le=16,
        description="Proxies in front of the API that append to X-Forwarded-For; the client "
        "address is the entry this many from the right (0 = never read the header).",
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1,::1",
        description="Peers (addresses, networks or *) whose X-Forwarded-For is read.",
    )

    # --- Model provider ----------------------------------------------------------------------
    provider: str = Field(default="dev", description="Model provider: dev, openai or azure.")
    default_model: str = Field(default="dev-echo", description="Model used when none is given.")
    model_context_tokens: int = Field(
        default=8192,
        ge=256,
        description="Context window of a model that model_context_windows does not name.",
    )
    model_context_windows: str = Field(
        default="",
        description="Context windows per model, as model=tokens,... or a JSON object; a model "
        "takes its own entry or the longest entry its name starts with. Tenants may override.",
    )
    compaction_threshold: float = Field(
        default=0.8, gt=0, le=1, description="Share of the window that triggers compaction."
    )
    dev_stream_delay_ms: int = Field(
        default=0, ge=0, description="Delay between streamed words of the dev model."
    )
    openai_base_url: str = Field(
        default="https://api.openai.com/v1", description="OpenAI-compatible endpoint."
    )
    openai_api_key: SecretStr | None = Field(default=None, description="Provider API key.")
    provider_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Timeout of one provider call."
    )
    provider_max_retries: int = Field(default=2, ge=0, description="Retries on provider 429/5xx.")
    provider_stream_usage: bool = Field(
        default=True,
        description="Ask for token usage in streams (stream_options); turn off for endpoints "
        "that answer 400 to it.",
    )
    azure_endpoint: str = Field(
        default="",
        description="Azure OpenAI resource endpoint (https://NAME.openai.azure.com), for "
        "provider azure; the key is openai_api_key.",
    )
    azure_api_version: str = Field(
        default="2024-10-21", description="Azure OpenAI api-version query parameter."
    )
    azure_deployments: str = Field(
        default="",
        description="Azure deployment per model, as model=deployment,... or a JSON object; a "
        "model not named is its own deployment name.",
    )
    azure_entra_id: bool = Field(
        default=False,
        description="Authenticate to Azure OpenAI with Microsoft Entra ID (azure-identity's "
        "DefaultAzureCredential) instead of a key.",
    )

    # --- Workers -----------------------------------------------------------------------------
    worker_concurrency: int = Field(default=50, ge=1, description="Jobs one worker runs at once.")
    worker_poll_delay_seconds: float = Field(
        default=0.1,
        gt=0,
        description="How long an idle worker waits for a wake-up before it polls the queue "
        "anyway (seconds; at least 0.01, and Redis ends an idle wait on its own timer, every "
        "0.1 s at its default hz). Every job the service queues wakes a worker at once; this "
        "bounds the wait only of jobs nobody announced (arq's retries, cron jobs).",
    )
    worker_drain_seconds: float = Field(
        default=30,
        ge=0,
        description="On SIGTERM a worker takes no new job and gives its running turns this long "
        "to finish (each job hands its session's next turn to another worker); turns still "
        "running then are handed over and start again elsewhere. 0: hand over at once.",
    )
    job_timeout_seconds: float = Field(
        default=120,
        gt=0,
        description=(
            "Deadline of one turn (seconds); past it the turn is retried, three times at most."
        ),
    )
    allow_eviction: bool = Field(
        default=False,
        description=(
            "Accept a Redis maxmemory-policy other than noeviction (it may delete live session "
            "keys); without it /readyz fails on such a Redis."
        ),
    )
    watchdog_interval_seconds: int = Field(
        default=2,
        ge=1,
        le=60,
        description="Period of the watchdog that hands stranded turns to a worker.",
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port of the worker's Prometheus /metrics (unset: not served).",
    )
    sweep_interval_seconds: int = Field(
        default=60, ge=1, description="Period of the expiry sweep cron."
    )

    # --- Logging -----------------------------------------------------------------------------
    log_level: str = Field(default="INFO", description="Log level.")
    log_format: LogFormat = Field(
        default=LogFormat.JSON, description="json (production) or console (development)."
    )
    log_content: bool = Field(
        default=False, description="Include message content in logs (debug only)."
    )

    @field_validator("redis_url", "queue_redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and value.partition("://")[0] not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _prefix_is_safe(cls, value: str) -> str:
        if not value or any(c in value for c in "{}*?[]: \t\r\n"):
            raise ValueError("key_prefix must be non-empty without braces, globs, colons or spaces")
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _peers_parse(cls, value: str) -> str:
        for item in value.split(","):
            if item.strip() not in ("", "*"):
                ipaddress.ip_network(item.strip(), strict=False)  # ValueError names it
        return value

    @field_validator("log_level")
    @classmethod
    def _level_is_known(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return level

    @field_validator("model_context_windows")
    @classmethod
    def _windows_parse(cls, value: str) -> str:
        for model, tokens in parse_mapping(value, "model_context_windows").items():
            if not tokens.isdigit() or int(tokens) < 256:
                raise ValueError(f"context window of {model!r} must be an integer >= 256")
        return value

    @field_validator("azure_deployments")
    @classmethod
    def _deployments_parse(cls, value: str) -> str:
        parse_mapping(value, "azure_deployments")
        return value

    def context_windows(self) -> dict[str, int]:
        """``model_context_windows`` as a mapping of model (or name prefix) to tokens."""
        return {k: int(v) for k, v in parse_mapping(self.model_context_windows, "").items()}

    def deployments(self) -> dict[str, str]:
        """``azure_deployments`` as a mapping of model name to Azure deployment name."""
        return parse_mapping(self.azure_deployments, "")

    @property
    def effective_queue_url(self) -> str | None:
        return self.queue_redis_url or self.redis_url

    @property
    def has_data_redis(self) -> bool:
        """Whether a data Redis is configured (else only ``sessionctl dev`` can run)."""
        return bool(self.redis_url or self.redis_sentinels or self.redis_cluster_nodes)

    def cluster_startup_nodes(self) -> list[tuple[str, int]]:
        return _host_ports(self.redis_cluster_nodes)

    def password_for(self, url: str | None) -> str | None:
        """``redis_password`` for a connection to ``url``: the data Redis's (its URL, or the
        Sentinels' master when ``url`` is None); another Redis's URL carries its own."""
        if self.redis_password is None or (url is not None and url != self.redis_url):
            return None
        return self.redis_password.get_secret_value()

    def sentinel_nodes(self) -> list[tuple[str, int]]:
        return _host_ports(self.redis_sentinels)


def parse_mapping(value: str, setting: str) -> dict[str, str]:
    """``a=1,b=2`` or ``{"a": 1, "b": 2}`` as ``{"a": "1", "b": "2"}``; ``ValueError`` naming
    ``setting`` for anything else (an empty key or value, a repeated key, a nested value)."""
    text = value.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{setting} is not valid JSON: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ValueError(f"{setting} must be a JSON object")
        pairs = [(str(k), v) for k, v in loaded.items()]
        if any(isinstance(v, dict | list | bool) or v is None for _, v in pairs):
            raise ValueError(f"{setting}: every value must be a string or a number")
        items = [(k.strip(), str(v).strip()) for k, v in pairs]
    else:
        items = []
        for entry in filter(None, (e.strip() for e in text.split(","))):
            key, sep, val = entry.rpartition("=")
            if not sep:
                raise ValueError(f"{setting}: {entry!r} is not name=value")
            items.append((key.strip(), val.strip()))
    mapping: dict[str, str] = {}
    for key, val in items:
        if not key or not val:
            raise ValueError(f"{setting}: empty name or value in {value!r}")
        if key in mapping:
            raise ValueError(f"{setting}: {key!r} is named twice")
        mapping[key] = val
    return mapping


def _host_ports(value: str) -> list[tuple[str, int]]:
    nodes: list[tuple[str, int]] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":")
        nodes.append((host or "127.0.0.1", int(port)))
    return nodes
