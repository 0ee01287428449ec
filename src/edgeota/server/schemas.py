"""API request and response bodies (pydantic v2): ``XCreate`` in, ``XPublic`` out."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgeota.errors import PolicyError
from edgeota.fsutil import safe_relative_path
from edgeota.server.versionspec import check_spec
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
    tags: list[str] = Field(default_factory=list)
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


class DeviceTagsUpdate(Strict):
    tags: list[str] = Field(max_length=32, description="key=value strings, one value per key")

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        keys = [parse_tag(t)[0] for t in v]
        if len(set(keys)) != len(keys):
            raise ValueError("each tag key may appear only once")
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


# --- groups and rollouts ----------------------------------------------------------------


class GroupFilter(Strict):
    """Which devices a dynamic group holds: every given criterion must match."""

    tags: list[str] = Field(default_factory=list, max_length=32, description="key=value, all")
    hardware_class: list[str] = Field(default_factory=list, max_length=32, description="any of")
    region: str | None = Field(default=None, description="the device's tag region=<value>")
    installed: dict[str, str] = Field(
        default_factory=dict,
        max_length=16,
        description="component -> installed version spec: '*', '1.2.0' or '>=1.0.0,<2.0.0'",
    )

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        for t in v:
            parse_tag(t)
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        return None if v is None else parse_tag(f"region={v}")[1]

    @field_validator("installed")
    @classmethod
    def _installed(cls, v: dict[str, str]) -> dict[str, str]:
        return {check_name(c, "component"): check_spec(spec) for c, spec in v.items()}


class GroupCreate(Strict):
    """A dynamic group (``filter``) or a static one (``devices``, added to their groups)."""

    name: str
    filter: GroupFilter | None = None
    devices: list[str] | None = Field(default=None, max_length=10000)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "group")

    @model_validator(mode="after")
    def _one_kind(self) -> GroupCreate:
        if (self.filter is None) == (self.devices is None):
            raise ValueError("give either 'filter' (a dynamic group) or 'devices' (a static one)")
        return self


class GroupPublic(BaseModel):
    name: str
    kind: Literal["static", "dynamic"]
    filter: GroupFilter | None
    devices: int
    created_at: datetime | None


class RolloutCreate(Strict):
    release: str = Field(
        min_length=1, max_length=128, description="a release ID, or component@version"
    )
    group: str = Field(description="the target group, static or dynamic")
    field_test_devices: list[str] | None = Field(default=None, min_length=1, max_length=1000)
    field_test_group: str | None = None
    percentages: list[float] = Field(default=[1, 10, 50, 100], min_length=1, max_length=20)
    success_share: float = Field(default=0.95, gt=0, le=1)
    max_failed: int | None = Field(default=None, ge=0)
    max_failed_share: float | None = Field(default=0.05, ge=0, lt=1)
    soak_s: float = Field(default=0.0, ge=0, le=90 * 86400)
    start_at: datetime | None = Field(default=None, description="default: at once")
    seed: str | None = Field(default=None, min_length=1, max_length=128)
    switch_policy: Literal["window", "now"] = Field(
        default="window", description="switch in the device's maintenance window, or at once"
    )

    @field_validator("group", "field_test_group")
    @classmethod
    def _group(cls, v: str | None) -> str | None:
        return None if v is None else check_name(v, "group")

    @model_validator(mode="after")
    def _one_field_test(self) -> RolloutCreate:
        if self.field_test_devices is not None and self.field_test_group is not None:
            raise ValueError("give field_test_devices or field_test_group, not both")
        return self


class RolloutPhasePublic(BaseModel):
    index: int
    name: str
    percent: float | None
    success_share: float
    max_failed: int | None
    max_failed_share: float | None
    soak_s: float
    started_at: datetime | None
    devices: int = Field(description="target devices that fall in this phase now")
    told: int
    pending: int
    updating: int
    updated: int
    failed: int
    rolled_back: int


class RolloutPublic(BaseModel):
    id: int
    release_id: str
    component: str
    version: str
    group: str | None
    status: str
    halt_reason: str | None
    state_version: int
    current_phase: str | None
    target_devices: int
    field_test_devices: list[str]
    phases: list[RolloutPhasePublic]
    seed: str
    start_at: datetime
    switch_policy: str
    rollback_of: int | None
    rolled_back_by: int | None
    created_by: str
    created_at: datetime
    updated_at: datetime


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


_TAG_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_TAG_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")


def parse_tag(tag: str) -> tuple[str, str]:
    """Split ``key=value``; raise ValueError naming the rule a tag breaks."""
    key, sep, value = tag.partition("=")
    if not sep or not _TAG_KEY.match(key) or not _TAG_VALUE.match(value):
        raise ValueError(
            f"invalid tag {tag!r}: write key=value, the key in lowercase letters, digits, "
            "'.', '_' or '-' (up to 64), the value in letters, digits and '._:/@+-' (up to 128)"
        )
    return key, value
