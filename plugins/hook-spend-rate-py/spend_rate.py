"""Spend-rate limiter: the policy logic, free of wasm bindings so plain CPython can test it.

Config (`--hook hook-spend-rate-py.wasm=CONFIG`): `key=value` pairs joined by `;`
  usd-per-minute=X   allowed spending rate (default 1.0)
  window-s=N         sliding window in seconds over which spending is summed (default 60);
                     the window may hold at most X * N / 60 USD
  mode=graceful|immediate   how to interrupt when the rate is exceeded (default graceful)
"""

import json

SNAPSHOT_VERSION = 1


class ConfigError(ValueError):
    pass


class Config:
    def __init__(self, usd_per_minute=1.0, window_s=60, mode="graceful"):
        self.usd_per_minute = usd_per_minute
        self.window_s = window_s
        self.mode = mode

    @property
    def window_limit_usd(self):
        return self.usd_per_minute * self.window_s / 60.0

    @classmethod
    def parse(cls, text):
        cfg = cls()
        for raw in text.split(";"):
            entry = raw.strip()
            if not entry:
                continue
            key, sep, value = entry.partition("=")
            key, value = key.strip(), value.strip()
            if not sep:
                raise ConfigError(f"spend-rate: config entry `{entry}` is not key=value")
            if key == "usd-per-minute":
                cfg.usd_per_minute = _positive_float(key, value)
            elif key == "window-s":
                try:
                    n = int(value)
                except ValueError:
                    n = 0
                if n < 1:
                    raise ConfigError(f"spend-rate: window-s `{value}` is not a positive integer")
                cfg.window_s = n
            elif key == "mode":
                if value not in ("graceful", "immediate"):
                    raise ConfigError(f"spend-rate: mode `{value}` is not graceful or immediate")
                cfg.mode = value
            else:
                raise ConfigError(f"spend-rate: unknown config key `{key}`")
        return cfg


def _positive_float(key, value):
    try:
        x = float(value)
    except ValueError:
        x = float("nan")
    # Also rejects nan and inf: a rate must be a real positive number.
    if not (0.0 < x < float("inf")):
        raise ConfigError(f"spend-rate: {key} `{value}` is not a positive number")
    return x


class SpendRate:
    """Paid calls in the sliding window, as (time in ms, cost in USD), oldest first."""

    def __init__(self, config=None):
        self.config = config or Config()
        self.events = []
        self.interrupts = 0

    def _expire(self, now_ms):
        horizon = now_ms - self.config.window_s * 1000
        self.events = [(t, c) for (t, c) in self.events if t > horizon]

    def window_spent(self, now_ms):
        self._expire(now_ms)
        return sum(c for (_, c) in self.events)

    def record(self, now_ms, cost_usd):
        """Record one settled call; return the interrupt reason if the rate is now exceeded."""
        if cost_usd > 0:
            self.events.append((now_ms, cost_usd))
        spent = self.window_spent(now_ms)
        limit = self.config.window_limit_usd
        if spent > limit:
            self.interrupts += 1
            return (
                f"spend-rate: ${spent:.6f} spent in the last {self.config.window_s}s "
                f"exceeds ${limit:.6f} ({self.config.usd_per_minute:g} USD/min)"
            )
        return None

    def snapshot(self):
        return json.dumps(
            {
                "version": SNAPSHOT_VERSION,
                "events": [[t, c] for (t, c) in self.events],
                "interrupts": self.interrupts,
            },
            separators=(",", ":"),
        ).encode()

    def restore(self, data):
        """Replace the state with a snapshot; raise ValueError (state untouched) if it is bad."""
        try:
            s = json.loads(bytes(data).decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"spend-rate: snapshot is not JSON: {e}") from None
        if not isinstance(s, dict) or s.get("version") != SNAPSHOT_VERSION:
            raise ValueError("spend-rate: snapshot has an unknown format")
        events, interrupts = s.get("events"), s.get("interrupts")
        ok = (
            isinstance(events, list)
            and all(
                isinstance(e, list)
                and len(e) == 2
                and isinstance(e[0], int)
                and isinstance(e[1], (int, float))
                and e[1] >= 0
                for e in events
            )
            and isinstance(interrupts, int)
            and interrupts >= 0
        )
        if not ok:
            raise ValueError("spend-rate: snapshot does not have the expected fields")
        self.events = [(t, float(c)) for (t, c) in events]
        self.interrupts = interrupts
