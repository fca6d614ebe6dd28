"""Call counting and deterministic fault injection shared by both sandboxes.

A fault rule names an operation (an fnmatch pattern such as ``"FindItem"``,
``"bulk2.*"`` or ``"*"``), when it fires (the n-th call of that operation, a seeded
probability, at most ``times`` firings) and what happens (:class:`FaultKind`). The
sandbox server asks :meth:`FaultInjector.check` once per counted request and turns the
returned fault into the protocol's own error shape.
"""

from __future__ import annotations

import fnmatch
import random
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class FaultKind(StrEnum):
    HTTP = "http"  # answer with ``status`` (e.g. 500, 503) in the protocol's error shape
    THROTTLE = "throttle"  # EWS ErrorServerBusy + BackOffMilliseconds / Salesforce 429 / REQUEST_LIMIT_EXCEEDED
    LATENCY = "latency"  # sleep ``delay`` seconds, then answer normally (a timeout when delay > client timeout)
    DROP = "drop"  # close the connection without answering


@dataclass
class FaultRule:
    operation: str
    kind: FaultKind
    nth: int | None = None  # fire on exactly this call number of the operation (1-based)
    rate: float = 0.0  # otherwise fire with this probability (seeded)
    times: int | None = None  # fire at most this many times (None = unlimited)
    status: int = 503
    delay: float = 0.0
    retry_after: float | None = None  # seconds; Retry-After / BackOffMilliseconds
    # Fault *after* the request took effect: the server applies it, then drops / delays /
    # errors, so the client never learns it succeeded (a worker dying mid-call).
    after: bool = False
    # What ``nth`` counts: calls of this operation, or every counted call of the sandbox
    # ("kill at the k-th external call of a run").
    position: str = "operation"
    fired: int = field(default=0)

    def matches(self, operation: str) -> bool:
        return fnmatch.fnmatchcase(operation, self.operation)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = str(self.kind)
        return data


class CallCounter:
    """Thread-safe per-operation request counter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def hit(self, operation: str) -> int:
        """Count one call and return its 1-based number for that operation."""
        with self._lock:
            self._counts[operation] += 1
            return self._counts[operation]

    def get(self, operation: str) -> int:
        with self._lock:
            return self._counts[operation]

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


class FaultInjector:
    """Holds fault rules; deterministic for a given seed and call order."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._random = random.Random(seed)

    def inject(self, operation: str, kind: FaultKind | str, **params: Any) -> FaultRule:
        """Add a rule, e.g. ``inject("FindItem", "throttle", nth=2, retry_after=0.05)``."""
        rule = FaultRule(operation=operation, kind=FaultKind(kind), **params)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self, seed: int | None = None) -> None:
        with self._lock:
            self._rules.clear()
            if seed is not None:
                self._random.seed(seed)

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def check(self, operation: str, call_number: int, total_number: int | None = None) -> FaultRule | None:
        """Return the first rule that fires for this call, recording the firing.

        ``call_number`` is the call's number for its operation, ``total_number`` across all
        operations (rules with ``position="total"``).
        """
        with self._lock:
            for rule in self._rules:
                if not rule.matches(operation):
                    continue
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                if rule.nth is not None:
                    number = total_number if rule.position == "total" and total_number is not None else call_number
                    fires = number == rule.nth
                else:
                    fires = rule.rate > 0 and self._random.random() < rule.rate
                if fires:
                    rule.fired += 1
                    return rule
        return None
