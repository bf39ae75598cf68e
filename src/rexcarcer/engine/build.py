"""Cached builds: each PROVISION step becomes ``images/<key>@img``.

The key of step N hashes (the key or id of its parent snapshot, the step's
instruction, the digest of what it copies). A step whose snapshot exists is not
run again; changing step N changes the keys of N and every step after it. A
step that fails, or a run that is killed mid-step, leaves a dataset without its
``@img`` snapshot, which the next build of that key destroys and redoes.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import time
from dataclasses import dataclass
from pathlib import Path

from rexcarcer import ipam, jailfs
from rexcarcer.buildctx import content_digest, copy_sources
from rexcarcer.errors import BuildError, RexError, UnsafePath
from rexcarcer.host import Host
from rexcarcer.model.base import BaseInfo
from rexcarcer.platform.base import jail_routes
from rexcarcer.rexfile.ast import IPInterface, Rexfile, Run, Step
from rexcarcer.runtime.base import BuildNet, build_env

IMG = "img"
# What holds a build step's address in IPAM: not a jail name (those are DNS
# labels), so no jail can own or release it.
BUILD_HOLDER = "_build-"


@dataclass(frozen=True, slots=True)
class StepPlan:
    index: int  # 1-based
    step: Step
    key: str
    parent: str  # the snapshot this step starts from
    cached: bool

    @property
    def dataset(self) -> str:
        return f"images/{self.key}"

    @property
    def snapshot(self) -> str:
        return f"{self.dataset}@{IMG}"


def step_key(
    parent_id: str, step: Step, content: str, env: tuple[tuple[str, str], ...] = ()
) -> str:
    # The step's fields, not its description (which does not quote paths); a RUN
    # step also sees the ENV variables, so they take part in its key.
    what = ["run", step.command, [list(kv) for kv in env]] if isinstance(step, Run) else [
        "copy", step.src, step.dst]  # fmt: skip
    text = json.dumps([parent_id, what, content], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def plan_build(host: Host, rexfile: Rexfile, base: BaseInfo) -> list[StepPlan]:
    sources = copy_sources(rexfile)
    parent_id = base.id
    parent = base.snapshot
    plans: list[StepPlan] = []
    for i, step in enumerate(rexfile.steps, 1):
        content = content_digest(sources[i]) if i in sources else ""
        key = step_key(parent_id, step, content, rexfile.env)
        cached = host.storage.exists(f"images/{key}@{IMG}")
        plans.append(StepPlan(i, step, key, parent, cached))
        parent_id, parent = key, f"images/{key}@{IMG}"
    return plans


def image_of(plans: list[StepPlan], base: BaseInfo) -> str:
    return plans[-1].snapshot if plans else base.snapshot


def build(host: Host, rexfile: Rexfile, base: BaseInfo) -> str:
    """Run the steps that are not cached; return the image snapshot."""
    plans = plan_build(host, rexfile, base)
    sources = copy_sources(rexfile)
    sweep_incomplete(host)
    for plan in plans:
        with host.lock(f"image-{plan.key}"):
            if host.storage.exists(plan.snapshot):
                host.progress.step(
                    f"Step {plan.index}/{len(plans)}: {plan.step.describe()} (cached)"
                )
                continue
            host.progress.step(f"Step {plan.index}/{len(plans)}: {plan.step.describe()}")
            _run_step(host, rexfile, base, plan, sources.get(plan.index))
    return image_of(plans, base)


def build_net(host: Host, key: str, address: IPInterface) -> BuildNet:
    """A step's network: ``address`` of the jail subnet on the jails' interface."""
    config = host.config
    return BuildNet(name=BUILD_HOLDER + key, address=address,
                    gateway=config.host_address, interface=config.interface,
                    routes=jail_routes(config))  # fmt: skip


def sweep_incomplete(host: Host) -> None:
    """Destroy images a killed run left half-built (nobody holds their lock),
    and release the addresses its steps held."""
    for addr, holder in ipam.taken(host.store).items():
        if holder.startswith(BUILD_HOLDER):
            # the step that holds it runs under its image's lock
            with host.try_lock(f"image-{holder.removeprefix(BUILD_HOLDER)}") as got:
                if got:
                    ipam.release(host.store, ipaddress.ip_address(addr), holder)
    for ds in host.storage.datasets("images"):
        if ds.props.get("complete") == "1":
            continue
        key = ds.name.split("/", 1)[1]
        with host.try_lock(f"image-{key}") as got:
            if got and not host.storage.exists(f"{ds.name}@{IMG}"):
                host.progress.step(f"Removing the half-built image {ds.name}")
                host.storage.destroy(ds.name, recursive=True)


def _where(rexfile: Rexfile, step: Step) -> str:
    return f"{rexfile.display}:{step.pos.line}"


def step_props(base: BaseInfo, plan: StepPlan, now: float | None = None) -> dict[str, str]:
    props = {
        "base": base.props.get("id", ""), "depth": str(plan.index), "parent": plan.parent,
        "step": plan.step.describe()[:200], "created": str(int(now or time.time())),
        # the jail's osrelease (jail(8)) comes from its image; carry the base's along
        "osrelease": base.props.get("osrelease", ""),
    }  # fmt: skip
    # zfs(8) refuses `-o prop=` with an empty value
    return {k: v for k, v in props.items() if v}


def step_commands(host: Host, rexfile: Rexfile, base: BaseInfo, plan: StepPlan) -> list[list[str]]:
    """What building one step runs (``rex plan``): clone the parent, run the step
    in a throw-away jail (a COPY writes files instead), snapshot, mark complete."""
    storage = host.storage
    out = [storage.clone_argv(plan.parent, plan.dataset, step_props(base, plan))]
    if isinstance(plan.step, Run):
        root = storage.mountpoint("images") / plan.key
        net = planned_net(host, plan.key)
        out += host.runtime.build_commands(root, plan.step.command, build_env(rexfile.env), net)
    out.append(storage.snapshot_argv(plan.snapshot))
    out += storage.set_props_argvs(plan.dataset, {"complete": "1"})
    return out


def planned_net(host: Host, key: str) -> BuildNet | None:
    """The network ``rex plan`` shows for a step: the address free now."""
    free = ipam.next_free(host.store, host.config.subnet)
    return None if free is None else build_net(host, key, free)


def _run_step(
    host: Host, rexfile: Rexfile, base: BaseInfo, plan: StepPlan, source: Path | None
) -> None:
    storage = host.storage
    storage.destroy(plan.dataset, recursive=True)  # a half-built leftover of a killed run
    root = storage.clone(plan.parent, plan.dataset, props=step_props(base, plan))
    try:
        if isinstance(plan.step, Run):
            _run(host, rexfile, root, plan.step, plan.key)
        else:
            assert source is not None
            try:
                jailfs.copy_into(root, source, plan.step.dst)
            except UnsafePath as exc:
                raise BuildError(
                    f"step {plan.index} ({_where(rexfile, plan.step)}: {plan.step.describe()}) "
                    f"failed: {exc.message}",
                    hint="a symlink in the image must not lead the destination out of the jail",
                ) from exc
            except OSError as exc:
                raise BuildError(
                    f"step {plan.index} ({_where(rexfile, plan.step)}: {plan.step.describe()}) "
                    f"failed: {exc}"
                ) from exc
        storage.snapshot(plan.snapshot)
        storage.set_props(plan.dataset, {"complete": "1"})
    except BaseException:
        storage.destroy(plan.dataset, recursive=True)
        raise


def _run(host: Host, rexfile: Rexfile, root: Path, step: Run, key: str) -> None:
    holder = BUILD_HOLDER + key
    try:
        address = ipam.allocate(host.store, host.config.subnet, holder, host=host.config.host)
    except RexError as exc:
        raise BuildError(f"{_where(rexfile, step)}: {step.describe()}: {exc.message}") from exc
    try:
        done = host.runtime.build_run(
            root, step.command, env=build_env(rexfile.env), on_output=host.progress.output,
            network=build_net(host, key, address),
        )  # fmt: skip
    except RexError as exc:
        raise BuildError(f"{_where(rexfile, step)}: {step.describe()}: {exc.message}") from exc
    finally:
        ipam.release(host.store, address.ip, holder)
    if done.returncode != 0:
        tail = "\n".join(done.stdout.splitlines()[-15:])
        raise BuildError(
            f"{_where(rexfile, step)}: {step.describe()} failed with exit status {done.returncode}",
            hint=("last output:\n" + tail) if tail else "the command printed nothing",
        )
