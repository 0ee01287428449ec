"""Database tables (SQLAlchemy 2). Every change here comes with an Alembic migration."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON, datetime: DateTime(timezone=True)}


class AdminToken(Base):
    __tablename__ = "admin_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class EnrollmentToken(Base):
    __tablename__ = "enrollment_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    groups: Mapped[list[str]]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    used_by: Mapped[str | None] = mapped_column(String(64))


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    credential_hash: Mapped[str] = mapped_column(String(64))
    hardware_class: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime | None]
    inventory: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Bumped whenever the device's desired state changes: the check-in ETag.
    desired_revision: Mapped[int] = mapped_column(Integer, default=1)
    # When the device may switch to a new release (edgeota.rollout.windows), as set by an
    # operator: [{"cron", "duration_s", "time_zone"}]; none means at any time.
    time_zone: Mapped[str | None] = mapped_column(String(64), default=None)
    maintenance_windows: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    max_deferrals: Mapped[int] = mapped_column(Integer, default=0)
    # The IANA zone the device reports in its inventory (None: not reported); windows set
    # without a zone are read in it.
    reported_time_zone: Mapped[str | None] = mapped_column(String(64), default=None)


class DeviceGroup(Base):
    __tablename__ = "device_groups"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    group_name: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class DeviceTag(Base):
    """One ``key=value`` tag of a device (one value per key); dynamic groups filter on them."""

    __tablename__ = "device_tags"
    __table_args__ = (Index("ix_device_tags_key_value", "key", "value"),)

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))


class DynamicGroup(Base):
    """A group defined by a filter over devices (see ``services.groups``), resolved on use."""

    __tablename__ = "dynamic_groups"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    filter: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))


class Release(Base):
    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("component", "version"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    component: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(64))
    hardware: Mapped[list[str]]
    needs: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))
    # Set when the release was retired: its targets are no longer signed or served.
    retired_at: Mapped[datetime | None] = mapped_column(default=None)


class ReleaseFile(Base):
    __tablename__ = "release_files"

    release_id: Mapped[str] = mapped_column(
        ForeignKey("releases.id", ondelete="CASCADE"), primary_key=True
    )
    file: Mapped[str] = mapped_column(String(255), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    variant: Mapped[str | None] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    length: Mapped[int] = mapped_column(BigInteger)
    target_path: Mapped[str] = mapped_column(String(512))
    tolerance: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # What the server chooses a model variant by (services.variants); null on other files.
    memory_mb: Mapped[int | None] = mapped_column(Integer, default=None)
    quality: Mapped[float | None] = mapped_column(Float, default=None)
    arch: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    accelerator: Mapped[str | None] = mapped_column(String(32), default=None)


class DeltaJob(Base):
    """A delta to build from an earlier release's copy of a file to a new release's file.

    Created with the release; claimed by one server process at a time with a conditional
    UPDATE (``claim_token`` names the claim, so a claim taken over after ``claimed_at`` went
    stale cannot finish it); ``done`` rows are the deltas devices are told about.
    """

    __tablename__ = "delta_jobs"
    __table_args__ = (
        UniqueConstraint("release_id", "file", "base_sha256"),
        Index("ix_delta_jobs_release_status", "release_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id", ondelete="CASCADE"))
    file: Mapped[str] = mapped_column(String(255))
    base_release_id: Mapped[str] = mapped_column(String(64))
    base_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claim_token: Mapped[str | None] = mapped_column(String(32))
    claimed_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    patch_sha256: Mapped[str | None] = mapped_column(String(64))
    patch_length: Mapped[int | None] = mapped_column(BigInteger)
    target_path: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime]


class Deployment(Base):
    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"))
    component: Mapped[str] = mapped_column(String(64))
    group_name: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))


class DesiredComponent(Base):
    """What the server wants one device to run, per component (materialized at deploy time)."""

    __tablename__ = "desired_components"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    component: Mapped[str] = mapped_column(String(64), primary_key=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"))
    deployment_id: Mapped[int | None] = mapped_column(ForeignKey("deployments.id"))
    # Set when a rollout made this the desired release, so a later group change does not
    # overwrite it with an older deployment.
    rollout_id: Mapped[int | None] = mapped_column(
        ForeignKey("rollouts.id", name="fk_desired_components_rollout_id_rollouts")
    )
    updated_at: Mapped[datetime]


class DeviceComponent(Base):
    """What one device reports it runs, per component (from inventory and events)."""

    __tablename__ = "device_components"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    component: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str | None] = mapped_column(String(64))
    release_id: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(32))
    last_event: Mapped[str | None] = mapped_column(String(64))
    last_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]


class DeviceEvent(Base):
    __tablename__ = "device_events"
    __table_args__ = (
        UniqueConstraint("device_id", "seq"),
        Index("ix_device_events_device_time", "device_id", "id"),
        # Failure counts per release (metrics, dashboard) read only the failure events.
        Index("ix_device_events_event_release", "event", "release_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[datetime]
    received_at: Mapped[datetime]
    component: Mapped[str | None] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(64))
    state: Mapped[str | None] = mapped_column(String(32))
    release_id: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Rollout(Base):
    """A staged rollout: its plan and state as JSON (``edgeota.rollout`` values).

    ``state_version`` mirrors ``state["version"]`` as a column, so that every change is one
    compare-and-set UPDATE; ``status`` mirrors ``state["status"]`` for indexed look-ups.
    A rollout targets either a group (resolved on every pass) or a fixed list of devices.
    """

    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"))
    component: Mapped[str] = mapped_column(String(64), index=True)
    target_group: Mapped[str | None] = mapped_column(String(64))
    target_device_ids: Mapped[list[str] | None] = mapped_column(JSON)
    plan: Mapped[dict[str, Any]]
    state: Mapped[dict[str, Any]]
    state_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    switch_policy: Mapped[str] = mapped_column(String(8))
    start_at: Mapped[datetime]
    rollback_of: Mapped[int | None] = mapped_column(ForeignKey("rollouts.id"))
    # The simulated-environment gate run: which server process runs it (claimed with a
    # conditional UPDATE, taken over when its heartbeat goes stale) and what it found.
    gate_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    gate_heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    gate_result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Halt when more than this share of the feedback on the release from the rollout's
    # devices is negative, once at least ``feedback_min_count`` devices have said something.
    max_negative_feedback_share: Mapped[float | None] = mapped_column(Float)
    feedback_min_count: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class RolloutDevice(Base):
    """A device a rollout has told to update, and where it stands (its ``DeviceOutcome``)."""

    __tablename__ = "rollout_devices"

    rollout_id: Mapped[int] = mapped_column(
        ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    phase: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    told_at: Mapped[datetime]
    changed_at: Mapped[datetime]
    # The newest event seq applied: resent or reordered events never move a device back.
    last_seq: Mapped[int | None] = mapped_column(BigInteger)


class AuditEntry(Base):
    """One operator action or rollout decision: who did what, to what, when, with details."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_target", "target_type", "target_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class DeviceLog(Base):
    """The tail of a device's agent log, uploaded after one of its updates failed.

    Kept in the database, not the artifact store: the store's files are public targets.
    """

    __tablename__ = "device_logs"
    __table_args__ = (Index("ix_device_logs_device", "device_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    component: Mapped[str | None] = mapped_column(String(64))
    release_id: Mapped[str | None] = mapped_column(String(64), index=True)
    event: Mapped[str | None] = mapped_column(String(64))
    uploaded_at: Mapped[datetime]
    size: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)


class Feedback(Base):
    """What a device's user said about a release: a rating and a short comment, no more.

    ``client_id`` is chosen by the device, so a resent report is stored once. ``rollout_id``
    is the rollout that told the device to install the release, if any.
    """

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("device_id", "client_id"),
        Index("ix_feedback_release", "release_id", "rollout_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(String(64))
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id", ondelete="CASCADE"))
    rollout_id: Mapped[int | None] = mapped_column(
        ForeignKey("rollouts.id", ondelete="SET NULL", name="fk_feedback_rollout_id_rollouts"),
        index=True,
    )
    rating: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    time: Mapped[datetime]
    received_at: Mapped[datetime]
