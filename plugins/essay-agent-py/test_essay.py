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

    def test_text_skips_denied_sections_and_reruns_replace(self):
        e = essay.Essay("")
        self.assertEqual(e.task, essay.DEFAULT_TASK)
        e.add_section(1, "Intro.")
        e.skip_section(2, "denied by hook")
        e.add_section(3, "ML.")
        e.add_section(3, "ML again.")
        self.assertEqual(e.text(), "Intro.\n\nML again.")
        self.assertEqual(len(e.written()), 2)

    def test_snapshot_round_trip(self):
        e = essay.Essay("Write about AI")
        e.add_section(1, "Intro.")
        e.skip_section(2, "denied")
        e.stop("budget exhausted at cycle 3")
        r = essay.Essay.restore(e.snapshot())
        self.assertEqual((r.task, r.sections, r.stopped), (e.task, e.sections, e.stopped))
        self.assertEqual(r.snapshot(), e.snapshot())

    def test_restore_rejects_garbage(self):
        for bad in [b"", b"{", b'{"version":1}', b'{"version":1,"task":"t","sections":[{"cycle":11,"text":"x"}]}',
                    b'{"version":1,"task":"t","sections":[{"cycle":1}]}', b'{"version":1,"task":"t","sections":[],"stopped":3}']:
            with self.assertRaises(ValueError, msg=bad):
                essay.Essay.restore(bad)


if __name__ == "__main__":
    unittest.main()
