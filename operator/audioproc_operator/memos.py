"""What the operator remembers between reconciles, kept in kopf's memos.

The API server holds the truth (the status, the Jobs, the pods); this process remembers
only what it decided and wrote but may not see through the watch yet, and what it has not
said in an Event yet:

- Per AudioJob: ``AudioJobMemo``, in kopf's per-object memo (``memo`` kwarg of the
  AudioJob's handlers, under ``AUDIOJOB_MEMO``). kopf drops it with the object (on its
  DELETED watch event), so nothing here needs forgetting by hand.
- Operator-wide: ``GpuLedger``, in the operator memo set up by the start-up handler
  (kopf's per-object memos are shallow copies of it, so every AudioJob's handlers reach
  the same ledger). Placement must see every earlier GPU decision of this process, also
  those whose status patch has not come back through the watch; the ledger reads them from
  the AudioJobs' memos, holding each weakly, so an AudioJob's row goes with its memo.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Final

import kopf

from audioproc.models.audiojob import AudioJobStatus
from audioproc.models.pod_contract import ItemListScan
from audioproc_operator.events import FailureBatch

#: The key of an AudioJob's ``AudioJobMemo`` in its kopf memo.
AUDIOJOB_MEMO: Final = "audiojob"


@dataclass(eq=False)  # compared by identity; weakly referenced by the ledger
class AudioJobMemo:
    """One AudioJob's in-memory state.

    ``decision``: the status fields of this process's placement (device, GPUs, chunk plan),
    used while the watch still shows no ``status.device``. ``gpus``: GPUs last granted by
    this process (0: given back; None: it never granted or released any). ``written``: the
    last status patched, the baseline of the events (a tick may run before its
    predecessor's patch comes back). ``failures``: failed items not yet in an event.
    ``settled``: a fingerprint of the AudioJob, Jobs and pods at the last tick that had
    nothing to do (the next tick that sees the same skips everything). ``finished``: this
    process wrote the final phase (it is written once, whatever the watch still shows).
    ``scan``: its item list's count and chunk offsets (``spec.itemsFrom``; a few hundred
    bytes), read once at placement.
    """

    decision: dict[str, Any] | None = None
    gpus: int | None = None
    written: AudioJobStatus | None = None
    failures: FailureBatch = field(default_factory=FailureBatch)
    settled: int | None = None
    finished: bool = False
    scan: ItemListScan | None = None

    @property
    def device(self) -> str | None:
        """The device this process placed the AudioJob on (None: not placed by it)."""
        return None if self.decision is None else str(self.decision["device"])

    def finish(self) -> None:
        """The final phase is written: keep only what the GPU ledger reads."""
        self.finished = True
        self.written, self.failures, self.settled, self.scan = None, FailureBatch(), None, None


def audiojob_memo(memo: kopf.Memo) -> AudioJobMemo:
    """The ``AudioJobMemo`` in an AudioJob's kopf memo, made on first use."""
    found = memo.get(AUDIOJOB_MEMO)
    if not isinstance(found, AudioJobMemo):
        found = memo[AUDIOJOB_MEMO] = AudioJobMemo()
    return found


class GpuLedger:
    """This process's GPU decisions across all AudioJobs (uid -> device, uid -> GPUs).

    ``lock`` serialises placement: a grant and the recording of its decision happen under
    it, so the next grant sees this one. The rows are the AudioJobs' own memos, held weakly:
    when kopf drops an AudioJob's memo, its row is gone.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._memos: weakref.WeakValueDictionary[str, AudioJobMemo] = weakref.WeakValueDictionary()

    def track(self, uid: str, memo: AudioJobMemo) -> None:
        """Count ``memo``'s decision and GPUs from now on (call under ``lock``)."""
        self._memos[uid] = memo

    def devices(self) -> dict[str, str]:
        """uid -> device of each AudioJob this process placed."""
        return {uid: memo.device for uid, memo in self._memos.items() if memo.device is not None}

    def queued(self) -> set[str]:
        """uids of the AudioJobs this process submitted to Kueue (Kueue holds their quota)."""
        return {
            uid
            for uid, memo in self._memos.items()
            if memo.decision is not None and "queue" in memo.decision
        }

    def gpus(self) -> dict[str, int]:
        """uid -> GPUs last granted (0: given back) by this process."""
        return {uid: memo.gpus for uid, memo in self._memos.items() if memo.gpus is not None}
