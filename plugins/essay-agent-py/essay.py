"""The essay writer's state and prompts, free of wasm bindings so plain CPython can test it.

Ten cycles, one section each; every section is one LLM call labelled
`llm_call_cycle_N`. The state (the essay so far) round-trips through JSON.
"""

import json

SNAPSHOT_VERSION = 1
DEFAULT_TASK = "Write an essay on artificial intelligence: its history, its methods and its future"
# Upper bound on output tokens per section; the host and hooks may lower it.
SECTION_MAX_TOKENS = 400
# How much of the previous text goes back into the prompt: keeps input bounded.
CONTEXT_CHARS = 2000

TITLES = [
    "Writing introduction paragraph",
    "Expanding on AI history",
    "Discussing machine learning",
    "Exploring neural networks",
    "Analyzing deep learning",
    "Discussing neural networks applications",
    "Examining natural language processing",
    "Weighing ethics and risks",
    "Looking at the future of AI",
    "Concluding essay",
]
CYCLES = len(TITLES)

SYSTEM_PROMPT = (
    "You are an essayist writing a ten-section essay one section at a time. "
    "Write only the section you are asked for: one or two paragraphs of plain prose, "
    "no headings, no lists, and do not repeat earlier sections."
)


def operation(cycle):
    return f"llm_call_cycle_{cycle}"


def title(cycle):
    if not 1 <= cycle <= CYCLES:
        raise ValueError(f"essay: cycle {cycle} is outside 1..{CYCLES}")
    return TITLES[cycle - 1]


class Essay:
    def __init__(self, task=""):
        self.task = task.strip() or DEFAULT_TASK
        # One entry per finished cycle: {"cycle", "title", "text"} or, when a hook
        # denied the call, {"cycle", "title", "skipped": reason}.
        self.sections = []
        # Why writing stopped early (budget exhausted), or None.
        self.stopped = None

    def written(self):
        return [s for s in self.sections if "text" in s]

    def prompt(self, cycle):
        """(system, user) messages for this cycle's section."""
        done = self.written()
        if done:
            covered = "; ".join(s["title"] for s in done)
            previous = "\n\n".join(s["text"] for s in done)[-CONTEXT_CHARS:]
            context = f"Sections written so far: {covered}.\n\nThe essay so far ends:\n{previous}\n\n"
        else:
            context = "This is the first section.\n\n"
        user = (
            f"Task: {self.task}\n\n{context}"
            f"Now write section {cycle} of {CYCLES}: {title(cycle)}."
        )
        return SYSTEM_PROMPT, user

    def _put(self, entry):
        # A re-run cycle (after an immediate interrupt) replaces its earlier entry.
        self.sections = [s for s in self.sections if s["cycle"] != entry["cycle"]]
        self.sections.append(entry)
        self.sections.sort(key=lambda s: s["cycle"])

    def add_section(self, cycle, text):
        self._put({"cycle": cycle, "title": title(cycle), "text": text.strip()})

    def skip_section(self, cycle, reason):
        self._put({"cycle": cycle, "title": title(cycle), "skipped": reason})

    def stop(self, reason):
        self.stopped = reason

    def text(self):
        return "\n\n".join(s["text"] for s in self.written() if s["text"])

    def snapshot(self):
        return json.dumps(
            {
                "version": SNAPSHOT_VERSION,
                "task": self.task,
                "sections": self.sections,
                "stopped": self.stopped,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def restore(cls, data):
        """Rebuild an essay from a snapshot; raise ValueError if it is malformed."""
        try:
            s = json.loads(bytes(data).decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"essay: snapshot is not JSON: {e}") from None
        if not isinstance(s, dict) or s.get("version") != SNAPSHOT_VERSION:
            raise ValueError("essay: snapshot has an unknown format")
        task, sections, stopped = s.get("task"), s.get("sections"), s.get("stopped")
        if not isinstance(task, str) or not isinstance(sections, list):
            raise ValueError("essay: snapshot does not have the expected fields")
        if stopped is not None and not isinstance(stopped, str):
            raise ValueError("essay: snapshot `stopped` is not a string")
        essay = cls(task)
        for sec in sections:
            if not (
                isinstance(sec, dict)
                and isinstance(sec.get("cycle"), int)
                and 1 <= sec["cycle"] <= CYCLES
                and isinstance(sec.get("text", sec.get("skipped")), str)
            ):
                raise ValueError("essay: snapshot has a malformed section")
            if "text" in sec:
                essay.add_section(sec["cycle"], sec["text"])
            else:
                essay.skip_section(sec["cycle"], sec["skipped"])
        essay.stopped = stopped
        return essay
