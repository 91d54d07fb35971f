"""Decoded customer states kept in memory between steps, within a budget of bytes.

The segment function reads a customer's state from Flink's keyed state as bytes; decoding them
(``decode_state``) allocates the state's few dozen Python objects, and dropping a state frees
them. A state looked up again soon is kept decoded here instead: a hit saves the read, the
decode and, once the cache is full, an eviction: live, misses were most of the job's latency
tail (bench/HISTORY.md, "The state cache by memory").

The budget is bytes, not states, because states differ several times over in size (with the
rules of ``rules/``, a few KB with a few events per customer, several times that with a
hundred). Measuring every state at every step would cost more than the cache saves
(``state_memory`` walks the state's objects), so the cache measures one state
in ``sample_every`` it finds, and holds as many states as the budget takes at their mean size:
the mean over the last ``window`` samples or so (an exponential average). The states it samples
are the ones looked up, so the busier customers: if anything it overestimates, and stays under
its budget. The budget is the memory to reserve for the cache in the TaskManager, per parallel
task (``job.state_cache_memory``; ``deploy/local/cluster.sh`` adds it to Flink's task off-heap
memory).

Valid as a cache because one instance of the segment function is the only writer of its keys,
and a restore or rescale creates new instances, with empty caches.
"""

from __future__ import annotations

from collections import OrderedDict

from ..core.state import CustomerState, state_memory

# Before the first sample: about what a state of the live bench's feed takes (bench/HISTORY.md).
FIRST_GUESS = 5 * 1024
# At most this many states dropped per state added: when the estimate grows, the cache shrinks to
# its new capacity over the next few lookups instead of all at once within one call.
MAX_EVICTIONS_PER_ADD = 4


class StateCache:
    """An LRU of decoded states within ``budget`` bytes (0 = keep none). Counts its lookups:
    ``hits``, ``misses`` (read from Flink state and decoded), ``new`` (no state yet), and
    ``evictions``; the caller resets them when it reports them."""

    __slots__ = (
        "budget",
        "sample_every",
        "_weight",
        "_states",
        "_countdown",
        "_samples",
        "state_bytes",
        "capacity",
        "hits",
        "misses",
        "new",
        "evictions",
    )

    def __init__(self, budget: int, *, sample_every: int = 64, window: int = 1000) -> None:
        if budget < 0 or sample_every < 1 or window < 1:
            raise ValueError("budget must be >= 0, sample_every and window >= 1")
        self.budget = budget
        self.sample_every = sample_every
        self._weight = 1.0 / window
        self._states: OrderedDict[str, CustomerState] = OrderedDict()
        self._countdown = 0  # the next known state found is measured
        self._samples = 0
        self.state_bytes = float(FIRST_GUESS)  # mean bytes per state, estimated
        self.capacity = budget // FIRST_GUESS
        self.hits = self.misses = self.new = self.evictions = 0

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, customer_id: str) -> bool:
        return customer_id in self._states

    def __iter__(self):
        return iter(self._states)

    @property
    def bytes(self) -> int:
        """The memory the cached states take, estimated."""
        return round(len(self._states) * self.state_bytes)

    def get(self, customer_id: str) -> CustomerState | None:
        """The customer's state if it is cached (a hit, counted), else None (not counted: the
        caller counts a hit elsewhere with ``hit`` or brings the state with ``add``)."""
        state = self._states.get(customer_id)
        if state is not None:
            self._states.move_to_end(customer_id)
            self.hits += 1
            self._countdown -= 1
            if self._countdown < 0:
                self._sample(state)
        return state

    def peek(self, customer_id: str) -> CustomerState | None:
        """The customer's state if it is cached; not a lookup (not counted, order kept)."""
        return self._states.get(customer_id)

    def hit(self) -> None:
        """A lookup served from elsewhere in memory (a changed state not written yet)."""
        self.hits += 1

    def add(self, customer_id: str, state: CustomerState, *, new: bool) -> None:
        """A state that was not cached: ``new`` for a customer without one, else decoded."""
        if new:
            self.new += 1
        else:
            self.misses += 1
            self._countdown -= 1
            if self._countdown < 0:
                self._sample(state)
        if not self.budget:
            return
        states = self._states
        states[customer_id] = state
        over = min(len(states) - self.capacity, MAX_EVICTIONS_PER_ADD)
        for _ in range(over):
            states.popitem(last=False)
        if over > 0:
            self.evictions += over

    def _sample(self, state: CustomerState) -> None:
        self._countdown = self.sample_every - 1
        self._samples += 1
        # The plain mean of the first samples, then an exponential average over about ``window``.
        weight = max(self._weight, 1.0 / self._samples)
        self.state_bytes += (state_memory(state) - self.state_bytes) * weight
        self.capacity = int(self.budget // self.state_bytes)

    def clear(self) -> None:
        self._states.clear()
