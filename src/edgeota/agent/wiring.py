"""The composition root: an :class:`~edgeota.agent.reconcile.Agent` with its real parts."""

from __future__ import annotations

from pathlib import Path

import httpx

from edgeota.agent.api_client import make_http_client
from edgeota.agent.companions import start_companions
from edgeota.agent.config import AgentConfig
from edgeota.agent.container_driver import ContainerDriver
from edgeota.agent.download import Downloader
from edgeota.agent.driver import HealthResult, ProcessDriver, RuntimeDriver
from edgeota.agent.engine import CliEngine
from edgeota.agent.health import check_runtime_health
from edgeota.agent.reconcile import Agent
from edgeota.agent.reporting import AgentStatus, ReportingClient
from edgeota.agent.runtimes import AgentSetupError
from edgeota.trust.client import TrustClient


def build_agent(config: AgentConfig) -> Agent:
    """The agent with its real parts: HTTPS API, TUF trust, downloader, runtime processes."""
    http = make_http_client(config.server_url, config.ca_file, config.http_timeout_s)
    local = httpx.Client()  # the runtime listens on loopback only
    try:
        root = None if config.root_file is None else config.root_file.read_bytes()
        trust = TrustClient(
            config.data_dir / "tuf", config.metadata_base_url, config.targets_base_url, http, root
        )
    except (OSError, ValueError) as e:
        raise AgentSetupError(f"cannot set up TUF verification: {e}") from e
    ports: dict[str, int] = {}

    def driver_for(name: str) -> RuntimeDriver:
        # One runtime per model component, on consecutive ports from runtime_port.
        port = ports.setdefault(name, config.runtime_port + len(ports))
        return ProcessDriver(
            port,
            host=config.runtime_host,
            client=local,
            restart_budget=config.restart_budget,
            restart_window_s=config.restart_window_s,
            log_path=config.data_dir / "logs" / f"runtime-{name}.log",
            pid_file=config.data_dir / "run" / f"runtime-{name}.pid",
        )

    def health(base_url: str, slot_dir: Path, timeout_s: float) -> HealthResult:
        return check_runtime_health(base_url, slot_dir, local, timeout_s)

    container_driver_for = None
    if config.containers is not None:
        engine = CliEngine(
            config.containers.executable,
            config.containers.global_args,
            command_timeout_s=config.containers.command_timeout_s,
        )

        def container_driver_for(name: str) -> RuntimeDriver:
            assert config.containers is not None
            return ContainerDriver(
                name,
                engine,
                config.data_dir / "components",
                prefix=config.containers.prefix,
                client=local,
                restart_budget=config.restart_budget,
                restart_window_s=config.restart_window_s,
            )

    status = AgentStatus()
    agent = Agent(
        config,
        api=ReportingClient(config.server_url, http, status=status, data_dir=config.data_dir),
        trust=trust,
        drivers=driver_for,
        container_drivers=container_driver_for,
        health=health,
        fetcher=Downloader(http, config.downloads_dir, config.download_limits),
    )
    start_companions(agent, config, status)
    return agent
