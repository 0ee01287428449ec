"""API request and response bodies (pydantic v2): ``XCreate`` in, ``XPublic`` out."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from edgeota.errors import PolicyError
from edgeota.fsutil import safe_relative_path
from edgeota.rollout.windows import MaintenanceWindow
from edgeota.targets import check_component_name, parse_version
from edgeota.versionspec import check_spec

Name = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
Sha256 = Field(pattern=r"^[0-9a-f]{64}$")


def check_time_zone(name: str) -> str:
    """``name`` if it is an IANA time zone this machine knows; ValueError saying so if not."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"time zone {name!r} is not an IANA time zone this server knows; "
            "use a name such as 'Europe/Berlin' or 'UTC'"
        ) from None
    return name


def _check_group_names(names: list[str]) -> list[str]:
    for name in names:
        check_name(name, "group")
    return names


GroupNames = Annotated[list[str], AfterValidator(_check_group_names)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- tokens and enrollment -------------------------------------------------------------


class AdminTokenCreate(Strict):
    name: str = Field(min_length=1, max_length=128)


class TokenPublic(BaseModel):
    token: str
    expires_at: datetime | None = None


class EnrollmentTokenCreate(Strict):
    groups: GroupNames = Field(default_factory=list, max_length=32)
    expires_in_s: int = Field(default=86400, ge=60, le=365 * 86400)


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
    accelerators: list[str] = Field(
        default_factory=list, max_length=8, description="e.g. ['cuda']; model variants may need one"
    )
    timezone: str | None = Field(
        default=None, max_length=64, description="the device's IANA time zone, e.g. 'Europe/Berlin'"
    )

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str | None) -> str | None:
        return None if v is None else check_time_zone(v)


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
    time_zone: str | None = Field(
        default=None, description="zone the operator set for windows given without one"
    )
    reported_time_zone: str | None = Field(
        default=None, description="the IANA time zone the device reports in its inventory"
    )
    windows: list[MaintenanceWindowSpec] = Field(default_factory=list)
    max_deferrals: int = 0
    variant_choice: dict[str, VariantChoicePublic] = Field(
        default_factory=dict,
        description="per component with model variants: the one this device gets, and why",
    )


class VariantChoicePublic(BaseModel):
    variant: str | None = Field(description="the chosen variant; null when none fits")
    status: str = Field(description="chosen, no_variant_fits or awaiting_inventory")
    reason: str


class DeviceGroupsUpdate(Strict):
    groups: GroupNames = Field(max_length=32)


class DeviceTagsUpdate(Strict):
    tags: list[str] = Field(max_length=32, description="key=value strings, one value per key")

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        keys = [parse_tag(t)[0] for t in v]
        if len(set(keys)) != len(keys):
            raise ValueError("each tag key may appear only once")
        return v


class MaintenanceWindowSpec(Strict):
    """A recurring window in which the device may switch to a new release."""

    cron: str = Field(
        min_length=1, max_length=128, description="5-field cron of the start, e.g. '0 2 * * *'"
    )
    duration_s: int = Field(ge=60, le=7 * 86400, description="how long it stays open")
    time_zone: str | None = Field(
        default=None, max_length=64, description="IANA zone of the cron; default: the device's"
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        MaintenanceWindow(v, 60, "UTC")  # raises ValueError saying what is wrong with it
        return v

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            MaintenanceWindow("0 0 * * *", 60, v)
        return v


class DeviceWindowsUpdate(Strict):
    """A device's maintenance windows, its time zone, and how often its user may defer."""

    time_zone: str | None = Field(default=None, max_length=64, description="IANA, e.g. 'UTC'")
    windows: list[MaintenanceWindowSpec] = Field(default_factory=list, max_length=16)
    max_deferrals: int = Field(default=0, ge=0, le=100)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            MaintenanceWindow("0 0 * * *", 60, v)  # raises ValueError naming the zone
        return v

    def resolved(self, device_zone: str | None = None) -> list[dict[str, Any]]:
        """The windows with every time zone filled in, as stored and sent to the device: a
        window's own zone, else this update's, else ``device_zone`` (reported), else UTC."""
        zone = self.time_zone or device_zone or "UTC"
        return [
            {"cron": w.cron, "duration_s": w.duration_s, "time_zone": w.time_zone or zone}
            for w in self.windows
        ]


class SchedulePublic(BaseModel):
    """When the device may switch: inside a window (none: any time); user deferrals allowed."""

    time_zone: str | None
    windows: list[MaintenanceWindowSpec]
    max_deferrals: int


class DesiredComponentPublic(BaseModel):
    release_id: str
    version: str
    targets: list[str]
    size_bytes: int = Field(default=0, description="the full files' bytes, for display only")
    switch_policy: Literal["window", "now"] = Field(
        default="now", description="switch only inside a maintenance window, or at once"
    )
    deltas: list[str] = Field(
        default_factory=list,
        description="signed patch targets of this release (role 'patch'); optional to use",
    )
    variant: str | None = Field(
        default=None, description="the model variant chosen for this device, if any"
    )
    status: str | None = Field(
        default=None,
        description="'no_variant_fits' or 'awaiting_inventory' (targets then empty): no "
        "variant can be chosen for this device, so there is nothing to install",
    )
    reason: str | None = Field(default=None, description="why this variant, or why none")


class DesiredStatePublic(BaseModel):
    revision: int
    poll_interval_s: int
    components: dict[str, DesiredComponentPublic]
    schedule: SchedulePublic | None = None


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
    role: Literal["model", "probe", "file", "container", "image", "layer"]
    sha256: str = Sha256
    length: int = Field(ge=0)
    variant: str | None = Field(default=None, max_length=32)
    tolerance: dict[str, float] | None = None
    # What the server chooses a model variant by (role "model" only).
    memory_mb: int | None = Field(default=None, ge=0, description="estimated memory need, MiB")
    quality: float | None = Field(
        default=None, allow_inf_nan=False, description="quality score; higher is better"
    )
    arch: list[str] | None = Field(
        default=None, min_length=1, max_length=16, description="CPU architectures; null: any"
    )
    accelerator: str | None = Field(
        default=None, min_length=1, max_length=32, description="an accelerator it needs"
    )

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

    @field_validator("needs")
    @classmethod
    def _needs(cls, v: dict[str, str]) -> dict[str, str]:
        for component, spec in v.items():
            check_name(component, "needs component")
            try:
                check_spec(spec)
            except ValueError as e:
                raise ValueError(f"needs of {component!r}: {e}") from e
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
    memory_mb: int | None = None
    quality: float | None = None
    arch: list[str] | None = None
    accelerator: str | None = None


class ReleaseDeltaPublic(BaseModel):
    """One delta of a release's file, from an earlier release's copy of it."""

    file: str
    base_release_id: str
    base_sha256: str
    status: str = Field(description="pending, running, done, failed or skipped")
    target_path: str | None = Field(description="the signed patch target, once done")
    sha256: str | None = Field(description="the patch's sha256, once done")
    length: int | None = Field(description="patch bytes, once built")
    error: str | None = Field(description="why it failed, or why it was skipped")


class ReleasePublic(BaseModel):
    id: str
    component: str
    version: str
    hardware: list[str]
    needs: dict[str, Any]
    created_at: datetime
    created_by: str
    files: list[ReleaseFilePublic]
    deltas: list[ReleaseDeltaPublic] = Field(default_factory=list)
    retired_at: datetime | None = Field(
        default=None, description="when its targets were taken out of the signed metadata"
    )


class PruneRequest(Strict):
    keep: int = Field(ge=1, le=10_000, description="how many of the newest releases to keep")
    component: str | None = Field(default=None, description="only this component; default all")
    dry_run: bool = Field(default=False, description="say what would be retired, retire nothing")

    @field_validator("component")
    @classmethod
    def _component(cls, v: str | None) -> str | None:
        return None if v is None else check_name(v, "component")


class ReleaseBrief(BaseModel):
    id: str
    component: str
    version: str


class KeptRelease(ReleaseBrief):
    reason: str


class PrunePublic(BaseModel):
    dry_run: bool
    retired: list[ReleaseBrief] = Field(description="retired now (would be, on a dry run)")
    kept: list[KeptRelease] = Field(description="older than the newest kept, but still needed")
    files_deleted: int


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
    sim_gate_devices: int = Field(
        default=0,
        ge=0,
        le=100,
        description="simulated devices that must install the release and stay healthy before "
        "the first phase starts; 0: no simulated-environment gate",
    )
    max_negative_feedback_share: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description="halt when more than this share of the devices' ratings are 1 or 2",
    )
    feedback_min_count: int = Field(
        default=5, ge=1, description="devices that must have rated before the share counts"
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
    sim_gate_devices: int = 0
    gate: str = Field(default="off", description="off, waiting, running, passed, failed, waived")
    gate_result: dict[str, Any] | None = None
    rollback_of: int | None
    rolled_back_by: int | None
    max_negative_feedback_share: float | None = None
    feedback_min_count: int = 1
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
