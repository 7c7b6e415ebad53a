"""Unit tests for the essay state; run with `python3 -m unittest` in this directory."""

import unittest

import essay


class EssayTest(unittest.TestCase):
    def test_titles_and_operations(self):
        self.assertEqual(essay.CYCLES, 10)
        self.assertEqual(essay.title(1), "Writing introduction paragraph")
        self.assertEqual(essay.title(10), "Concluding essay")
        self.assertEqual(essay.operation(3), "llm_call_cycle_3")
        with self.assertRaises(ValueError):
            essay.title(11)

    def test_prompt_carries_bounded_context(self):
        e = essay.Essay("Write about AI")
        self.assertIn("first section", e.prompt(1)[1])
        e.add_section(1, "x" * 10_000)
        user = e.prompt(2)[1]
        self.assertIn("Expanding on AI history", user)
        self.assertLess(len(user), essay.CONTEXT_CHARS + 1000)

    def test_sections_go_in_order_and_skips_count(self):
        e = essay.Essay("")
        self.assertEqual(e.task, essay.DEFAULT_TASK)
        self.assertEqual(e.next_section(), 1)
        e.add_section(1, "Intro.")
        e.skip_section(2, "denied by hook")
        with self.assertRaises(ValueError):
            e.add_section(2, "again")
        e.add_section(3, " ML. ")
        self.assertEqual(e.next_section(), 4)
        self.assertEqual(e.text(), "Intro.\n\nML.")
        for n in range(4, 11):
            e.add_section(n, f"s{n}")
        self.assertIsNone(e.next_section())

    def test_snapshot_round_trip(self):
        e = essay.Essay("Write about AI")
        e.add_section(1, "Intro.")
        e.skip_section(2, "denied")
        r = essay.Essay.restore(e.snapshot())
        self.assertEqual((r.task, r.sections, r.next_section()), (e.task, e.sections, 3))
        self.assertEqual(r.snapshot(), e.snapshot())

    def test_restore_rejects_garbage(self):
        for bad in [b"", b"{", b"[]", b'{"version":2,"task":"t","sections":[]}', b'{"version":1}',
                    b'{"version":1,"task":"t","sections":[{"section":2,"text":"x"}]}',
                    b'{"version":1,"task":"t","sections":[{"section":1}]}',
                    b'{"version":1,"task":"t","sections":[{"section":1,"text":3}]}']:
            with self.assertRaises(ValueError, msg=bad):
                essay.Essay.restore(bad)


if __name__ == "__main__":
    unittest.main()
