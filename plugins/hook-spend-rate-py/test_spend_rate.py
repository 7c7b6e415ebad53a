"""Unit tests for the policy logic; run with `python3 -m unittest` in this directory."""

import unittest

from spend_rate import Config, ConfigError, SpendRate


class ConfigTest(unittest.TestCase):
    def test_defaults_and_parse(self):
        self.assertEqual(Config.parse("").window_limit_usd, 1.0)
        c = Config.parse(" usd-per-minute=0.06 ; window-s=30;mode=immediate ")
        self.assertEqual((c.usd_per_minute, c.window_s, c.mode), (0.06, 30, "immediate"))
        self.assertAlmostEqual(c.window_limit_usd, 0.03)

    def test_rejects_bad_values(self):
        for bad in ["usd-per-minute=0", "usd-per-minute=-1", "usd-per-minute=nan", "usd-per-minute=inf",
                    "window-s=0", "window-s=1.5", "mode=later", "rate=1", "usd-per-minute"]:
            with self.assertRaises(ConfigError, msg=bad):
                Config.parse(bad)


class SpendRateTest(unittest.TestCase):
    def test_interrupts_when_window_exceeds_rate(self):
        r = SpendRate(Config.parse("usd-per-minute=0.01"))
        self.assertIsNone(r.record(0, 0.004))
        self.assertIsNone(r.record(1_000, 0.004))
        self.assertIsNone(r.record(2_000, 0.0))  # free calls never count
        reason = r.record(3_000, 0.004)
        self.assertIn("exceeds $0.010000", reason)
        self.assertEqual(r.interrupts, 1)

    def test_old_spending_leaves_the_window(self):
        r = SpendRate(Config.parse("usd-per-minute=0.01;window-s=10"))
        limit = r.config.window_limit_usd
        self.assertIsNone(r.record(0, limit * 0.9))
        self.assertIsNone(r.record(10_000, limit * 0.9))  # the first call is exactly 10 s old: gone
        self.assertIsNotNone(r.record(15_000, limit * 0.2))

    def test_snapshot_round_trip(self):
        r = SpendRate(Config.parse("usd-per-minute=0.01"))
        r.record(1_000, 0.006)
        r.record(2_000, 0.006)
        s = SpendRate(Config.parse("usd-per-minute=0.01"))
        s.restore(r.snapshot())
        self.assertEqual((s.events, s.interrupts), (r.events, r.interrupts))
        self.assertIsNotNone(s.record(3_000, 0.001))

    def test_restore_rejects_garbage_and_keeps_state(self):
        r = SpendRate()
        r.record(0, 0.5)
        for bad in [b"", b"\xff", b"[]", b'{"version":2}', b'{"version":1,"events":[[0,-1]],"interrupts":0}',
                    b'{"version":1,"events":[],"interrupts":"x"}']:
            with self.assertRaises(ValueError, msg=bad):
                r.restore(bad)
        self.assertEqual(r.events, [(0, 0.5)])


if __name__ == "__main__":
    unittest.main()
