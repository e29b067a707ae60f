"""The OpenNebula 3.2 VM state machine of the local cloud, driven by one scheduler thread.

ONE's dispatch and life-cycle managers move a VM through STATE/LCM_STATE pairs
(spec §2.3, §2.5): ``PENDING -> ACTIVE/PROLOG -> ACTIVE/BOOT -> ACTIVE/RUNNING`` and the
shutdown, stop, suspend, resume, cancel, finalize, resubmit, hold/release, restart and
reboot paths, each with the same preconditions ONE checks (wrong state -> ``-2``). Timed
steps are entries in one heap served by one thread, so ten thousand VMs cost ten
thousand heap entries, not threads. Every state change bumps ``vm.step``; a due entry
whose step no longer matches is stale and is dropped, which is how actions cancel
pending transitions. The next step is a pure function of (STATE, LCM_STATE), so a
restarted cloud reschedules transient VMs from the stored state alone.

Guests (per-VM SSH servers, the ``GuestHooks`` seam) are started *before* a VM is
published as RUNNING, so a client that sees RUNNING also sees the ``SSH_PORT``. Hook
calls run on a few worker threads, each VM always on the same worker, so the start and
stop calls of one VM never overtake each other.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Protocol, Tuple, Union

if TYPE_CHECKING:
    from .catalogue import Catalogue

__all__ = [
    "Lifecycle", "GuestHooks", "DELAY_STEPS", "parse_delays",
    "INIT", "PENDING", "HOLD", "ACTIVE", "STOPPED", "SUSPENDED", "DONE", "FAILED",
    "LCM_INIT", "PROLOG", "BOOT", "RUNNING", "MIGRATE", "SAVE_STOP", "SAVE_SUSPEND",
    "SAVE_MIGRATE", "PROLOG_MIGRATE", "PROLOG_RESUME", "EPILOG_STOP", "EPILOG",
    "SHUTDOWN", "CANCEL", "FAILURE", "CLEANUP", "UNKNOWN",
    "REASON_NONE", "REASON_ERROR", "REASON_STOP_RESUME", "REASON_USER", "REASON_CANCEL",
    "OK", "WRONG_STATE", "UNDEFINED", "HISTORY_FIELDS",
]

log = logging.getLogger(__name__)

# VirtualMachine::VmState and ::LcmState of ONE 3.2
INIT, PENDING, HOLD, ACTIVE, STOPPED, SUSPENDED, DONE, FAILED = range(8)
(LCM_INIT, PROLOG, BOOT, RUNNING, MIGRATE, SAVE_STOP, SAVE_SUSPEND, SAVE_MIGRATE,
 PROLOG_MIGRATE, PROLOG_RESUME, EPILOG_STOP, EPILOG, SHUTDOWN, CANCEL, FAILURE,
 CLEANUP, UNKNOWN) = range(17)
# History::MigrationReason
REASON_NONE, REASON_ERROR, REASON_STOP_RESUME, REASON_USER, REASON_CANCEL = range(5)
# DispatchManager return codes, as VirtualMachineAction maps them to answers; UNDEFINED
# stands for the uninitialised result of an action name VirtualMachineAction does not know.
OK, WRONG_STATE, UNDEFINED = 0, -2, None

DELAY_STEPS = ("pending", "prolog", "boot", "shutdown", "cancel", "epilog", "save")
DEFAULT_DELAY = 0.3
_GUEST_WORKERS = 4
_BATCH = 256          # transitions per pool lock hold: bounds request latency in bursts
HISTORY_FIELDS = ("SEQ", "HOSTNAME", "VM_DIR", "HID", "STIME", "ETIME", "VMMMAD", "VNMMAD",
                   "TMMAD", "PSTIME", "PETIME", "RSTIME", "RETIME", "ESTIME", "EETIME", "REASON")
_METADATA_ID = re.compile(r"/metadata/([A-Za-z0-9_-]{27})/?$")

# A heap entry: (monotonic due time, tie-breaker, VM id, the VM's step when scheduled)
_Due = Tuple[float, int, int, int]
#: One HISTORY record: HISTORY_FIELDS, numbers but for HOSTNAME, VM_DIR and the drivers.
HistoryRecord = Dict[str, Union[int, str]]


class GuestHooks(Protocol):
    """What the life cycle tells the guests of its VMs (:class:`.guests.GuestManager`).
    Both calls run on worker threads, never with the pool lock held."""

    def vm_running(self, vm_id: int, ip: str, public_key: Optional[str],
                   image_id: Optional[str]) -> Optional[int]:
        """The VM booted: start its guest on ``ip``; the SSH port, or None without one."""

    def vm_stopped(self, vm_id: int) -> None:
        """The VM left RUNNING: stop its guest."""


def parse_delays(delays: Union[float, Mapping[str, float]]) -> Dict[str, float]:
    """Seconds per timed step. A number applies to every step; a mapping may name steps
    of :data:`DELAY_STEPS` and ``"default"`` (for the others, else 0.3 s)."""
    if isinstance(delays, Mapping):
        unknown = set(delays) - set(DELAY_STEPS) - {"default"}
        if unknown:
            raise ValueError("unknown delay step(s): %s (known: %s)"
                             % (", ".join(sorted(unknown)), ", ".join(DELAY_STEPS)))
        default = float(delays.get("default", DEFAULT_DELAY))
        result = {step: float(delays.get(step, default)) for step in DELAY_STEPS}
    else:
        result = {step: float(delays) for step in DELAY_STEPS}
    if any(value < 0 for value in result.values()):
        raise ValueError("delays must be >= 0")
    return result


# (STATE, LCM_STATE) of a transient VM -> the delay step that ends it
_TIMED = {
    (PENDING, LCM_INIT): "pending",
    (ACTIVE, PROLOG): "prolog",
    (ACTIVE, PROLOG_RESUME): "prolog",
    (ACTIVE, BOOT): "boot",
    (ACTIVE, SHUTDOWN): "shutdown",
    (ACTIVE, CANCEL): "cancel",
    (ACTIVE, EPILOG): "epilog",
    (ACTIVE, EPILOG_STOP): "epilog",
    (ACTIVE, SAVE_STOP): "save",
    (ACTIVE, SAVE_SUSPEND): "save",
}


def _vector(vm, name: str) -> Optional[Dict[str, str]]:
    for attr, value in vm.template:
        if attr == name and isinstance(value, dict):
            return value
    return None


def guest_address(vm) -> Optional[str]:
    """The first NIC's IP: where clients wait for SSH (spec §6)."""
    for attr, value in vm.template:
        if attr == "NIC" and isinstance(value, dict):
            return value.get("IP") or None
    return None


def guest_public_key(vm) -> Optional[str]:
    """The key ONE's context script would install: CONTEXT/PUBLIC_KEY, else the
    cloud-init authorized keys (base64)."""
    context = _vector(vm, "CONTEXT") or {}
    key = context.get("PUBLIC_KEY", "").strip()
    if key:
        return key
    encoded = context.get("CLOUD_INIT_AUTHORIZED_KEYS", "").strip()
    if encoded:
        try:
            return base64.b64decode(encoded).decode("utf-8").strip() or None
        except ValueError:
            return None
    return None


def guest_image_id(vm) -> Optional[str]:
    """The Marketplace id of the first disk (text after the last ``/`` of its SOURCE)."""
    disk = _vector(vm, "DISK")
    source = (disk or {}).get("SOURCE", "")
    return source.rstrip("/").rsplit("/", 1)[-1] or None if source else None


class Lifecycle:
    """State rules and timed transitions for the VMs of a pool.

    ``pool`` must offer ``batch()`` (a context manager holding the pool lock and
    committing touched VMs at exit), ``get(vm_id)``, ``touch(vm)``, ``release_leases(vm)``,
    ``set_attribute(vm, name, value_or_None)`` and ``add_attribute(vm, name, value)``.
    """

    def __init__(self, pool, delays: Union[float, Mapping[str, float]] = DEFAULT_DELAY,
                 guests: Optional[GuestHooks] = None, catalogue: Optional[Catalogue] = None,
                 hostname: str = "localhost",
                 on_done: Optional[Callable[[int], None]] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.pool = pool
        self.on_done = on_done
        self.delays = parse_delays(delays)
        self.guests = guests
        self.catalogue = catalogue
        self.hostname = hostname
        self.clock = clock
        self._heap: List[_Due] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self._workers = [ThreadPoolExecutor(1, thread_name_prefix="stratuslab-guest")
                         for _ in range(_GUEST_WORKERS)] if guests is not None else []

    # -- scheduler ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stratuslab-lifecycle",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for worker in self._workers:
            worker.shutdown(wait=True)

    def _schedule(self, vm, delay: float) -> None:
        vm.due = self.clock() + delay
        entry = (time.monotonic() + delay, next(self._seq), vm.id, vm.step)
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (
                        not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopping:
                    return
                now = time.monotonic()
                due: List[_Due] = []
                while self._heap and self._heap[0][0] <= now and len(due) < _BATCH:
                    due.append(heapq.heappop(self._heap))
            try:
                with self.pool.batch():
                    for _, _, vm_id, step in due:
                        vm = self.pool.get(vm_id)
                        if vm is not None and vm.step == step:
                            self._advance(vm)
            except Exception:  # the scheduler must outlive any bug in one transition
                log.exception("life-cycle transition failed")

    # -- state changes -------------------------------------------------------------------

    def _enter(self, vm, state: int, lcm: int = LCM_INIT) -> None:
        """Set the state, invalidate pending steps, schedule the next one if timed."""
        vm.state, vm.lcm = state, lcm
        vm.step += 1
        vm.due = None
        self.pool.touch(vm)
        step = _TIMED.get((state, lcm))
        if step is not None:
            self._schedule(vm, self.delays[step])

    def _new_history(self, vm, now: int) -> HistoryRecord:
        record: HistoryRecord = dict.fromkeys(HISTORY_FIELDS, 0)
        record.update(SEQ=len(vm.history), HOSTNAME=self.hostname, VM_DIR="/var/lib/one",
                      VMMMAD="vmm_kvm", VNMMAD="dummy", TMMAD="tm_stratuslab", STIME=now)
        vm.history.append(record)
        return record

    def _close_history(self, vm, now: int, reason: Optional[int] = None) -> None:
        """End the current history record; ``reason`` None keeps the one it has."""
        if vm.history:
            record = vm.history[-1]
            if not record["ETIME"]:
                record["ETIME"] = now
            if record["RSTIME"] and not record["RETIME"]:
                record["RETIME"] = now
            if reason is not None:
                record["REASON"] = reason

    def _finish(self, vm, state: int, now: int) -> None:
        """Enter DONE or FAILED: the end of a VM's life. Only DONE gives the leases back
        (``DispatchManager::failed_action`` keeps them; finalize releases them)."""
        vm.etime = now
        vm.memory = vm.cpu = 0
        if state == DONE:
            self.pool.release_leases(vm)
        self._enter(vm, state)
        if state == DONE and self.on_done is not None:
            try:
                self.on_done(vm.id)
            except Exception:
                log.exception("clean-up of VM %d failed", vm.id)

    def _advance(self, vm) -> None:
        """The end of a timed step (called with the pool lock held)."""
        now = int(self.clock())
        key = (vm.state, vm.lcm)
        if key == (PENDING, LCM_INIT):
            resumed = bool(vm.history) and vm.history[-1]["REASON"] == REASON_STOP_RESUME
            record = self._new_history(vm, now)
            record["PSTIME"] = now
            self._enter(vm, ACTIVE, PROLOG_RESUME if resumed else PROLOG)
        elif vm.lcm in (PROLOG, PROLOG_RESUME):
            record = vm.history[-1]
            record["PETIME"] = now
            problem = self._image_problem(vm) if vm.lcm == PROLOG else None
            if problem:
                # TransferManagerDriver (typo included) via set_template_error_message,
                # which adds an ERROR vector without removing earlier ones
                self.pool.add_attribute(vm, "ERROR", {
                    "MESSAGE": "Error excuting image transfer script: " + problem,
                    "TIMESTAMP": time.ctime(now)})
                self._close_history(vm, now, REASON_ERROR)
                self._finish(vm, FAILED, now)
                return
            record["RSTIME"] = now
            self._enter(vm, ACTIVE, BOOT)
        elif vm.lcm == BOOT:
            self._boot_done(vm)
        elif vm.lcm in (SHUTDOWN, CANCEL):
            record = vm.history[-1]
            record["RETIME"] = record["ESTIME"] = now
            if vm.lcm == CANCEL:  # LifeCycleManager::cancel_success_action
                record["REASON"] = REASON_CANCEL
            self._enter(vm, ACTIVE, EPILOG)
        elif vm.lcm == EPILOG:
            record = vm.history[-1]
            record["EETIME"] = now
            self._close_history(vm, now)  # the reason stays: NONE, or CANCEL
            self._finish(vm, DONE, now)
        elif vm.lcm == SAVE_STOP:
            record = vm.history[-1]
            record["RETIME"] = record["ESTIME"] = now
            self._enter(vm, ACTIVE, EPILOG_STOP)
        elif vm.lcm == EPILOG_STOP:
            vm.history[-1]["EETIME"] = now
            self._close_history(vm, now, REASON_STOP_RESUME)
            vm.memory = vm.cpu = 0
            self._enter(vm, STOPPED)
        elif vm.lcm == SAVE_SUSPEND:
            self._close_history(vm, now, REASON_STOP_RESUME)
            vm.memory = vm.cpu = 0
            self._enter(vm, SUSPENDED)

    def _image_problem(self, vm) -> Optional[str]:
        """Why the image transfer (PROLOG) fails: a Marketplace image the catalogue
        does not know. Other sources (pdisk, plain URLs) are not checked."""
        if self.catalogue is None:
            return None
        disk = _vector(vm, "DISK") or {}
        match = _METADATA_ID.search(disk.get("SOURCE", ""))
        if match is None:
            return None
        image_id = match.group(1)
        try:
            # Any entry will do, whatever its status: expiry and deprecation are the
            # client's business (it looks the image up before allocating).
            known = any(entry.image_id == image_id for entry in self.catalogue.entries())
        except Exception:
            log.exception("catalogue lookup failed")
            return None
        if known:
            return None
        return "image %s not found in the Marketplace" % image_id

    # -- running VMs and their guests ----------------------------------------------------

    def _running(self, vm, port: Optional[int]) -> None:
        now = int(self.clock())
        vm.last_poll = now
        vm.deploy_id = "one-%d" % vm.id  # set by the hypervisor's answer to DEPLOY
        vm.memory = _memory_kb(vm)
        vm.cpu = 1
        self.pool.set_attribute(vm, "SSH_PORT", str(port) if port not in (None, 22) else None)
        self._enter(vm, ACTIVE, RUNNING)

    def _boot_done(self, vm) -> None:
        if self.guests is None:
            self._running(vm, None)
            return
        ident, step = vm.id, vm.step
        address, key, image = guest_address(vm), guest_public_key(vm), guest_image_id(vm)

        def start_guest() -> None:
            port = self._call_running(ident, address, key, image)
            with self.pool.batch():
                current = self.pool.get(ident)
                if current is not None and current.step == step and current.lcm == BOOT:
                    self._running(current, port)
                    return
            # The VM moved on while its guest was starting: undo.
            self._call_stopped(ident)

        self._worker(ident).submit(start_guest)

    def _worker(self, vm_id: int) -> ThreadPoolExecutor:
        return self._workers[vm_id % len(self._workers)]

    def _call_running(self, vm_id: int, address: Optional[str], key: Optional[str],
                      image: Optional[str]) -> Optional[int]:
        guests = self.guests  # the workers that call this exist only with guests
        if guests is None or address is None:
            return None
        try:
            return guests.vm_running(vm_id, address, key, image)
        except Exception:
            log.exception("guest of VM %d did not start", vm_id)
            return None

    def _call_stopped(self, vm_id: int) -> None:
        if self.guests is None:
            return
        try:
            self.guests.vm_stopped(vm_id)
        except Exception:
            log.exception("guest of VM %d did not stop", vm_id)

    def _leave_running(self, vm) -> None:
        """The VM is no longer RUNNING: stop its guest and withdraw SSH_PORT."""
        self.pool.set_attribute(vm, "SSH_PORT", None)
        if self.guests is not None:
            self._worker(vm.id).submit(self._call_stopped, vm.id)

    def _restart_guest(self, vm) -> None:
        """Reboot, or a cloud restart: the guest goes down and comes back."""
        if self.guests is None:
            return
        ident, step = vm.id, vm.step
        address, key, image = guest_address(vm), guest_public_key(vm), guest_image_id(vm)

        def restart(stop_first: bool) -> None:
            if stop_first:
                self._call_stopped(ident)
            port = self._call_running(ident, address, key, image)
            with self.pool.batch():
                current = self.pool.get(ident)
                if current is not None and current.step == step:
                    self.pool.set_attribute(
                        current, "SSH_PORT", str(port) if port not in (None, 22) else None)
                    return
            self._call_stopped(ident)

        self._worker(ident).submit(restart, True)

    # -- entry points (called with the pool lock held) -----------------------------------

    def allocated(self, vm) -> None:
        """A new VM is PENDING: let the scheduler pick it up."""
        self._enter(vm, PENDING)

    def restored(self, vm) -> None:
        """A VM reloaded from the store: resume its timed step, restart its guest."""
        step = _TIMED.get((vm.state, vm.lcm))
        if step is not None:
            delay = self.delays[step]
            if vm.due is not None:
                delay = min(delay, max(0.0, vm.due - self.clock()))
            self._schedule(vm, delay)
        elif (vm.state, vm.lcm) == (ACTIVE, RUNNING) and self.guests is None:
            self.pool.set_attribute(vm, "SSH_PORT", None)   # no guest serves it any more
        elif (vm.state, vm.lcm) == (ACTIVE, RUNNING):
            ident, step_now = vm.id, vm.step
            address, key, image = guest_address(vm), guest_public_key(vm), guest_image_id(vm)

            def start_again() -> None:
                port = self._call_running(ident, address, key, image)
                with self.pool.batch():
                    current = self.pool.get(ident)
                    if current is not None and current.step == step_now:
                        self.pool.set_attribute(
                            current, "SSH_PORT", str(port) if port not in (None, 22) else None)
                        return
                self._call_stopped(ident)

            self._worker(ident).submit(start_again)

    def knows(self, name: str) -> bool:
        """Whether ``name`` is one of the actions ``one.vm.action`` dispatches."""
        return name.isidentifier() and hasattr(self, "_action_" + name)

    def action(self, vm, name: str) -> Optional[int]:
        """Apply ``one.vm.action`` ``name``; returns OK, WRONG_STATE or UNDEFINED (a name
        ONE does not dispatch: its result code is left uninitialised)."""
        if not self.knows(name):
            return UNDEFINED
        return getattr(self, "_action_" + name)(vm, int(self.clock()))

    def _is_running(self, vm) -> bool:
        return vm.state == ACTIVE and vm.lcm == RUNNING

    def _from_running(self, vm, lcm: int) -> int:
        """The actions allowed on a RUNNING VM only, which then moves to LCM state ``lcm``."""
        if not self._is_running(vm):
            return WRONG_STATE
        self._leave_running(vm)
        self._enter(vm, ACTIVE, lcm)
        return OK

    def _action_shutdown(self, vm, now: int) -> int:
        return self._from_running(vm, SHUTDOWN)

    def _action_cancel(self, vm, now: int) -> int:
        return self._from_running(vm, CANCEL)

    def _action_stop(self, vm, now: int) -> int:
        return self._from_running(vm, SAVE_STOP)

    def _action_suspend(self, vm, now: int) -> int:
        return self._from_running(vm, SAVE_SUSPEND)

    def _action_reboot(self, vm, now: int) -> int:
        if not self._is_running(vm):
            return WRONG_STATE
        self._restart_guest(vm)
        return OK

    def _action_hold(self, vm, now: int) -> int:
        if vm.state != PENDING:
            return WRONG_STATE
        self._enter(vm, HOLD)
        return OK

    def _action_release(self, vm, now: int) -> int:
        if vm.state != HOLD:
            return WRONG_STATE
        self._enter(vm, PENDING)
        return OK

    def _action_resume(self, vm, now: int) -> int:
        if vm.state == STOPPED:
            self._enter(vm, PENDING)
            return OK
        if vm.state == SUSPENDED:
            # LifeCycleManager::restore_action: a new history record on the same host
            record = self._new_history(vm, now)
            record["RSTIME"] = now
            self._enter(vm, ACTIVE, BOOT)
            return OK
        return WRONG_STATE

    def _action_restart(self, vm, now: int) -> int:
        if vm.state != ACTIVE or vm.lcm not in (UNKNOWN, BOOT):
            return WRONG_STATE
        self._enter(vm, ACTIVE, BOOT)
        return OK

    def _action_finalize(self, vm, now: int) -> int:
        if vm.state == DONE:
            return OK
        if self._is_running(vm):
            self._leave_running(vm)
        if vm.state == ACTIVE:
            # LCM DELETE: clean up (CLEANUP is transient), then DONE
            self._close_history(vm, now, REASON_USER)
        self._finish(vm, DONE, now)
        return OK

    def _action_resubmit(self, vm, now: int) -> int:
        if vm.state in (DONE, SUSPENDED):
            return WRONG_STATE
        if vm.state in (INIT, PENDING):
            return OK
        if self._is_running(vm):
            self._leave_running(vm)
        if vm.state == ACTIVE:
            self._close_history(vm, now, REASON_USER)
            vm.memory = vm.cpu = 0
        self._enter(vm, PENDING)  # a FAILED VM still holds its leases
        return OK


def _memory_kb(vm) -> int:
    """Monitoring MEMORY of a running VM: what it was given, in KB."""
    for attr, value in vm.template:
        if attr == "MEMORY" and isinstance(value, str):
            try:
                return int(float(value)) * 1024
            except ValueError:
                return 0
    return 0
