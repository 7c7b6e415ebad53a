"""componentize-py entry point: the `policy` export of world `hook`, backed by spend_rate."""

import json
import time

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log
from wit_world.imports.types import (
    AfterDecision_Continue,
    AfterDecision_Interrupt,
    CallDecision_Allow,
    InterruptMode,
    InterruptRequest,
    Level,
)

from spend_rate import Config, ConfigError, SpendRate

_limiter = SpendRate()


def _now_ms():
    # Wall clock, not monotonic: window timestamps must still mean something after a resume.
    return int(time.time() * 1000)


class Policy(exports.Policy):
    def on_start(self, e):
        try:
            _limiter.config = Config.parse(e.config)
        except ConfigError as err:
            # A misconfigured limiter must not silently allow: trap, and the host fails closed.
            log.log(Level.ERROR, str(err))
            raise
        c = _limiter.config
        log.log(
            Level.INFO,
            f"spend-rate: at most {c.usd_per_minute:g} USD/min over {c.window_s}s "
            f"(${c.window_limit_usd:.6f} per window), {c.mode} interrupt",
        )

    def before_call(self, e):
        return CallDecision_Allow()

    def after_call(self, e):
        reason = _limiter.record(_now_ms(), e.cost_usd)
        if reason is None:
            return AfterDecision_Continue()
        log.log(Level.WARN, reason)
        mode = InterruptMode.IMMEDIATE if _limiter.config.mode == "immediate" else InterruptMode.GRACEFUL
        return AfterDecision_Interrupt(InterruptRequest(mode=mode, reason=reason))

    def on_threshold(self, e):
        now = _now_ms()
        log.log(
            Level.INFO,
            f"spend-rate: saw threshold {e.threshold:.0%} at cycle {e.cycle}; "
            f"${_limiter.window_spent(now):.6f} in the current window",
        )

    def on_interrupt(self, e):
        pass

    def on_end(self, e):
        now = _now_ms()
        log.emit(
            "spend_rate_summary",
            json.dumps(
                {
                    "status": e.status,
                    "usd_per_minute": _limiter.config.usd_per_minute,
                    "window_s": _limiter.config.window_s,
                    "window_spent_usd": round(_limiter.window_spent(now), 9),
                    "interrupts": _limiter.interrupts,
                }
            ),
        )

    def snapshot(self):
        return _limiter.snapshot()

    def restore(self, state):
        try:
            _limiter.restore(state)
        except ValueError as err:
            raise Err(str(err))
