"""API request and response bodies (pydantic v2): ``XCreate`` in, ``XPublic`` out."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgeota.errors import PolicyError
from edgeota.fsutil import safe_relative_path
from edgeota.targets import check_component_name, parse_version

Name = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
Sha256 = Field(pattern=r"^[0-9a-f]{64}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- tokens and enrollment -------------------------------------------------------------


class AdminTokenCreate(Strict):
    name: str = Field(min_length=1, max_length=128)


class TokenPublic(BaseModel):
    token: str
    expires_at: datetime | None = None


class EnrollmentTokenCreate(Strict):
    groups: list[str] = Field(default_factory=list, max_length=32)
    expires_in_s: int = Field(default=86400, ge=60, le=365 * 86400)

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        for g in v:
            check_name(g, "group")
        return v


class EnrollRequest(Strict):
    enrollment_token: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=128)
    hardware_class: str = Name


class EnrollResponse(BaseModel):
    device_id: str
    credential: str
    poll_interval_s: int


# --- devices ----------------------------------------------------------------------------


class InstalledComponent(Strict):
    version: str | None = Field(default=None, max_length=64)
    release_id: str | None = Field(default=None, max_length=64)
    state: str = Field(default="idle", max_length=32)
    slot: str | None = Field(default=None, max_length=8)


class Inventory(Strict):
    hardware_class: str = Name
    arch: str = Field(default="", max_length=32)
    ram_total_mb: int = Field(ge=0)
    model_ram_budget_mb: int = Field(ge=0)
    disk_free_mb: int = Field(ge=0)
    agent_version: str = Field(default="", max_length=32)
    components: dict[str, InstalledComponent] = Field(default_factory=dict, max_length=64)


class DeviceComponentPublic(BaseModel):
    component: str
    version: str | None
    release_id: str | None
    state: str
    last_event: str | None
    last_reason: str | None
    updated_at: datetime


class DevicePublic(BaseModel):
    id: str
    name: str
    hardware_class: str
    groups: list[str]
    created_at: datetime
    revoked: bool
    last_seen_at: datetime | None
    inventory: dict[str, Any]
    desired: dict[str, str]  # component -> version
    components: list[DeviceComponentPublic]


class DeviceGroupsUpdate(Strict):
    groups: list[str] = Field(max_length=32)

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        for g in v:
            check_name(g, "group")
        return v


class DesiredComponentPublic(BaseModel):
    release_id: str
    version: str
    targets: list[str]


class DesiredStatePublic(BaseModel):
    revision: int
    poll_interval_s: int
    components: dict[str, DesiredComponentPublic]


class EventIn(Strict):
    seq: int = Field(ge=0)
    time: datetime
    event: str = Field(min_length=1, max_length=64)
    component: str | None = Field(default=None, max_length=64)
    state: str | None = Field(default=None, max_length=32)
    release_id: str | None = Field(default=None, max_length=64)
    version: str | None = Field(default=None, max_length=64)
    reason: str | None = Field(default=None, max_length=4000)
    detail: dict[str, Any] = Field(default_factory=dict)


class EventBatch(Strict):
    events: list[EventIn] = Field(max_length=1000)


class EventBatchResult(BaseModel):
    accepted_through: int


class EventPublic(BaseModel):
    seq: int
    time: datetime
    received_at: datetime
    event: str
    component: str | None
    state: str | None
    release_id: str | None
    version: str | None
    reason: str | None
    detail: dict[str, Any]


# --- releases and deployments ---------------------------------------------------------


class ReleaseFileCreate(Strict):
    file: str = Field(min_length=1, max_length=255)
    role: Literal["model", "probe", "file"]
    sha256: str = Sha256
    length: int = Field(ge=0)
    variant: str | None = Field(default=None, max_length=32)
    tolerance: dict[str, float] | None = None

    @field_validator("file")
    @classmethod
    def _file(cls, v: str) -> str:
        try:
            safe_relative_path(v)
        except PolicyError as e:
            raise ValueError(str(e)) from e
        return v


class ReleaseCreate(Strict):
    component: str
    version: str
    files: list[ReleaseFileCreate] = Field(min_length=1, max_length=256)
    hardware: list[str] = Field(default_factory=lambda: ["*"], min_length=1, max_length=64)
    needs: dict[str, str] = Field(default_factory=dict, max_length=32)

    @field_validator("component")
    @classmethod
    def _component(cls, v: str) -> str:
        return check_name(v, "component")

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        try:
            parse_version(v)
        except PolicyError as e:
            raise ValueError(str(e)) from e
        return v

    @field_validator("files")
    @classmethod
    def _unique_files(cls, v: list[ReleaseFileCreate]) -> list[ReleaseFileCreate]:
        names = [f.file for f in v]
        if len(set(names)) != len(names):
            raise ValueError("each file may appear only once in a release")
        return v


class ReleaseFilePublic(BaseModel):
    file: str
    role: str
    variant: str | None
    sha256: str
    length: int
    target_path: str
    tolerance: dict[str, Any] | None


class ReleasePublic(BaseModel):
    id: str
    component: str
    version: str
    hardware: list[str]
    needs: dict[str, Any]
    created_at: datetime
    created_by: str
    files: list[ReleaseFilePublic]


class DeploymentCreate(Strict):
    release: str = Field(
        min_length=1, max_length=128, description="a release ID, or component@version"
    )
    group: str

    @field_validator("group")
    @classmethod
    def _group(cls, v: str) -> str:
        return check_name(v, "group")


class DeploymentPublic(BaseModel):
    id: int
    release_id: str
    component: str
    version: str
    group: str
    created_at: datetime
    created_by: str
    devices: int


class ArtifactPublic(BaseModel):
    sha256: str
    length: int


class ServerInfo(BaseModel):
    version: str
    root_url: str
    metadata_url: str
    targets_url: str


def check_name(value: str, what: str) -> str:
    try:
        return check_component_name(value)
    except PolicyError as e:
        raise ValueError(str(e).replace("component name", f"{what} name")) from e
