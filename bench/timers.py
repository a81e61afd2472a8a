"""Where the time of one ``generate`` call goes, measured from outside the Hub code.

``timed_generate`` is an instrument for ``slimspec.runner.run_methods``: for one call it wraps the target's
forward, the drafter's forward and head, and the proposer's methods (drafting, token selection, bookkeeping) with
timers, and removes them after the call. What is left of the call's time is the decoding loop's own work
(verification, stopping criteria, cache crops) and transformers' preparation. The Hub files keep no clocks (only counts, in
``last_generate_stats``); everything here is benchmark-only.
"""

from __future__ import annotations

import functools
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields

PROPOSER_METHODS = ("propose", "observe", "record")  # the proposer's work per pass, drafting included


class CallTimer:
    """Wall time and number of calls of ``owner.<name>(...)``: an instance attribute shadows the method until
    ``close`` (``functools.wraps`` keeps its signature visible to ``inspect``, which transformers reads)."""

    def __init__(self, owner, name: str):
        self.owner, self.name = owner, name
        self.seconds, self.calls = 0.0, 0
        self._own = vars(owner).get(name)  # an instance attribute this one shadows (restored by close)
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1

        setattr(owner, name, timed)

    def close(self) -> None:
        if self._own is None:
            delattr(self.owner, self.name)
        else:
            setattr(self.owner, self.name, self._own)


@dataclass
class CallTimes:
    """Seconds of one generate call by part (they add up over calls with ``+``)."""

    target_seconds: float = 0.0  # target forwards
    target_calls: int = 0  # target forwards, prefill included
    drafter_seconds: float = 0.0  # drafter forwards, head included
    head_seconds: float = 0.0  # drafter head: final norm and LM head
    select_seconds: float = 0.0  # turning draft logits into draft tokens
    proposer_seconds: float = 0.0  # the proposer's methods, drafting and selection included

    def __add__(self, other: "CallTimes") -> "CallTimes":
        return CallTimes(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @property
    def body_seconds(self) -> float:
        """The drafter without its head: embeddings, fc, decoder layer."""
        return self.drafter_seconds - self.head_seconds

    @property
    def proposer_own_seconds(self) -> float:
        """The proposer's own bookkeeping: its time outside the drafter and token selection."""
        return self.proposer_seconds - self.drafter_seconds - self.select_seconds


def _proposer_class(drafter):
    """The proposer class of the drafter's own decoding module (the installed one, or its Hub copy)."""
    mixin = next(c for c in type(drafter).__mro__ if c.__name__ == "SlimSpecGenerationMixin")
    return sys.modules[mixin.__module__].SlimSpecProposer


def _seconds(timers: list, *names: str) -> float:
    return sum(t.seconds for t in timers if t.name in names)


@contextmanager
def timed_generate(target, method):
    """Instrument for ``run_methods``: yields a ``CallTimes`` that is filled in when the call ends."""
    times = CallTimes()
    forward = CallTimer(target, "forward")
    drafter, proposer = [], []
    if method.drafter is not None:
        drafter = [CallTimer(method.drafter, "forward"), CallTimer(method.drafter, "head")]
        proposer_class = _proposer_class(method.drafter)
        proposer = [CallTimer(proposer_class, name) for name in ("_select", *PROPOSER_METHODS)]
    try:
        yield times
    finally:
        for timer in (*proposer, *reversed(drafter), forward):
            timer.close()
    times.target_seconds, times.target_calls = forward.seconds, forward.calls
    times.drafter_seconds, times.head_seconds = _seconds(drafter, "forward"), _seconds(drafter, "head")
    times.select_seconds = _seconds(proposer, "_select")
    times.proposer_seconds = _seconds(proposer, *PROPOSER_METHODS)
