"""Refuse to move devices to a release that would leave a need between components unmet.

For each device the check looks at what it will run once the release is desired: the
release itself, plus per other component the desired release if there is one, else what the
device reports it runs. A need that breaks there, either the release's own or another
component's need of the release's component, refuses the whole deployment or rollout
(nothing is written): the message names the need, how many devices, and a few of them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeota.needs import Running, unmet_needs
from edgeota.server.models import DesiredComponent, DeviceComponent, Release
from edgeota.server.services.errors import ConflictError

_CHUNK = 500
_NAMED_DEVICES = 5


def refuse_broken_needs(session: Session, release: Release, device_ids: Sequence[str]) -> None:
    """Raise ConflictError when ``release`` on these devices breaks a need."""
    broken: dict[str, list[str]] = defaultdict(list)
    ids = sorted(set(device_ids))
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        for device_id, running in _future(session, release, chunk).items():
            for unmet in unmet_needs(running):
                if release.component in (unmet.owner, unmet.component):
                    broken[str(unmet)].append(device_id)
    if not broken:
        return
    lines = []
    for need, devices in sorted(broken.items()):
        named = ", ".join(devices[:_NAMED_DEVICES])
        more = f" and {len(devices) - _NAMED_DEVICES} more" if len(devices) > _NAMED_DEVICES else ""
        lines.append(f"{need} on {len(devices)} device(s) ({named}{more})")
    raise ConflictError(
        f"{release.component} {release.version} would leave needs unmet: "
        + "; ".join(lines)
        + ". Deploy the needed versions to these devices first, or a release whose needs "
        "they meet"
    )


def _future(
    session: Session, release: Release, device_ids: list[str]
) -> dict[str, dict[str, Running]]:
    """Per device, what each component will run once ``release`` is desired."""
    future: dict[str, dict[str, Running]] = {d: {} for d in device_ids}
    reported = session.execute(
        select(DeviceComponent, Release)
        .outerjoin(Release, Release.id == DeviceComponent.release_id)
        .where(DeviceComponent.device_id.in_(device_ids), DeviceComponent.version.is_not(None))
    ).all()
    for row, installed in reported:
        needs = dict(installed.needs) if installed is not None else {}
        future[row.device_id][row.component] = Running(str(row.version), needs)
    desired = session.execute(
        select(DesiredComponent, Release)
        .join(Release, Release.id == DesiredComponent.release_id)
        .where(DesiredComponent.device_id.in_(device_ids))
    ).all()
    for want, wanted in desired:
        future[want.device_id][want.component] = Running(wanted.version, dict(wanted.needs))
    for running in future.values():
        running[release.component] = Running(release.version, dict(release.needs))
    return future
