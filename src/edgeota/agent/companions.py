"""What runs beside the update loop in a real agent: the notice listener and the local API.

Both are optional (``AgentConfig.notices``, ``AgentConfig.local_api_port``), run on daemon
threads with their own HTTP clients, and stop when the agent closes. Neither can stop the
update loop: a failing companion only logs.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from edgeota.agent.api_client import make_http_client
from edgeota.agent.config import AgentConfig
from edgeota.agent.feedback_outbox import FeedbackOutbox
from edgeota.agent.localapi import LocalApi, start_local_api
from edgeota.agent.notices import NoticeListener
from edgeota.agent.reporting import AgentStatus, ReportingClient

if TYPE_CHECKING:
    from edgeota.agent.reconcile import Agent

FEEDBACK_RETRY_S = 60.0


def start_companions(agent: Agent, config: AgentConfig, status: AgentStatus) -> None:
    if config.notices:
        # Its own client: a long-poll holds a connection for up to long_poll_s.
        http = make_http_client(config.server_url, config.ca_file, config.long_poll_s + 30.0)
        listener = NoticeListener(
            ReportingClient(config.server_url, http),
            lambda: agent.journal.identity,
            agent.wake,
            status=status,
            ca_file=config.mqtt_ca_file or config.ca_file,
            long_poll_s=config.long_poll_s,
        )
        listener.start()
        agent.on_close.append(listener.stop)
    if config.local_api_port is not None:
        _start_local_api(agent, config, status)


def _start_local_api(agent: Agent, config: AgentConfig, status: AgentStatus) -> None:
    outbox = FeedbackOutbox(config.data_dir / "feedback-outbox.json")
    client = ReportingClient(
        config.server_url, make_http_client(config.server_url, config.ca_file, 30.0)
    )
    sending = threading.Lock()
    stop = threading.Event()

    def send_feedback() -> None:
        ident = agent.journal.identity
        if ident is None or not sending.acquire(blocking=False):
            return  # not enrolled yet, or a send is under way (it takes the new one too)
        try:
            client.set_identity(ident.device_id, ident.credential)
            outbox.flush(client.post_feedback)
        finally:
            sending.release()

    def retry_feedback() -> None:
        while not stop.wait(FEEDBACK_RETRY_S):
            if outbox.pending():
                send_feedback()

    api = LocalApi(agent, status, outbox, send_feedback=send_feedback)
    server = start_local_api(api, config.runtime_host, config.local_api_port or 0)
    if server is None:
        return
    threading.Thread(target=retry_feedback, name="edgeota-feedback", daemon=True).start()

    def close() -> None:
        stop.set()
        server.shutdown()
        server.server_close()

    agent.on_close.append(close)
