"""Device schedules: maintenance windows, time zone, deferrals; and each component's policy.

The device switches to a new release only inside one of its windows, unless the release came
with the switch policy "now" (plain deployments, fleet rollbacks, and rollouts created so).
Both reach the device in its desired state, so changing them bumps the device's
``desired_revision`` (its check-in ETag).
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeota.server.models import DesiredComponent, Device, Rollout
from edgeota.server.schemas import DeviceWindowsUpdate, MaintenanceWindowSpec, SchedulePublic

Policy = Literal["window", "now"]
NOW: Policy = "now"


def set_windows(session: Session, device: Device, body: DeviceWindowsUpdate) -> None:
    device.time_zone = body.time_zone
    # Windows given without a zone, on a device without one set, follow the device's clock.
    device.maintenance_windows = body.resolved(device.reported_time_zone)
    device.max_deferrals = body.max_deferrals
    device.desired_revision += 1  # the schedule is part of the desired state


def windows_of(device: Device) -> list[MaintenanceWindowSpec]:
    return [MaintenanceWindowSpec.model_validate(w) for w in device.maintenance_windows or []]


def schedule_of(device: Device) -> SchedulePublic | None:
    """The device's schedule, or None when it has none (it may switch at any time)."""
    windows = windows_of(device)
    if not windows and not device.max_deferrals and device.time_zone is None:
        return None
    return SchedulePublic(
        time_zone=device.time_zone, windows=windows, max_deferrals=device.max_deferrals or 0
    )


def switch_policies(session: Session, device_id: str) -> dict[str, Policy]:
    """Component -> switch policy of the rollout that chose its desired release ("now" when
    a plain deployment chose it)."""
    rows = session.execute(
        select(DesiredComponent.component, Rollout.switch_policy)
        .join(Rollout, Rollout.id == DesiredComponent.rollout_id)
        .where(DesiredComponent.device_id == device_id)
    )
    return {component: "window" if policy == "window" else NOW for component, policy in rows}
