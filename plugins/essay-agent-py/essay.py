"""The essay writer's state and prompts, free of wasm bindings so plain CPython can test it.

Ten sections, one per cycle; section N is one LLM call labelled `llm_call_cycle_N`.
The next section is the first one not yet finished, whatever the host's cycle number,
so a run stopped by its budget and resumed later writes exactly the sections an
uninterrupted run would. The state (the essay so far) round-trips through JSON.
"""

import json

SNAPSHOT_VERSION = 1
DEFAULT_TASK = "Write an essay on artificial intelligence: its history, its methods and its future"
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


def operation(section):
    return f"llm_call_cycle_{section}"


def title(section):
    if not 1 <= section <= CYCLES:
        raise ValueError(f"essay: section {section} is outside 1..{CYCLES}")
    return TITLES[section - 1]


class Essay:
    def __init__(self, task=""):
        self.task = task.strip() or DEFAULT_TASK
        # One entry per finished section, in order: {"section", "title", "text"} or,
        # when a hook denied the call, {"section", "title", "skipped": reason}.
        self.sections = []

    def written(self):
        return [s for s in self.sections if "text" in s]

    def next_section(self):
        """The section to write next (1-based), or None when all are finished."""
        n = len(self.sections) + 1
        return n if n <= CYCLES else None

    def prompt(self, section):
        """(system, user) messages for this section."""
        done = self.written()
        if done:
            covered = "; ".join(s["title"] for s in done)
            previous = "\n\n".join(s["text"] for s in done)[-CONTEXT_CHARS:]
            context = f"Sections written so far: {covered}.\n\nThe essay so far ends:\n{previous}\n\n"
        else:
            context = "This is the first section.\n\n"
        user = (
            f"Task: {self.task}\n\n{context}"
            f"Now write section {section} of {CYCLES}: {title(section)}."
        )
        return SYSTEM_PROMPT, user

    def _finish(self, entry):
        if entry["section"] != self.next_section():
            raise ValueError(f"essay: section {entry['section']} is not the next one ({self.next_section()})")
        self.sections.append(entry)

    def add_section(self, section, text):
        self._finish({"section": section, "title": title(section), "text": text.strip()})

    def skip_section(self, section, reason):
        self._finish({"section": section, "title": title(section), "skipped": reason})

    def text(self):
        return "\n\n".join(s["text"] for s in self.written() if s["text"])

    def snapshot(self):
        return json.dumps(
            {
                "version": SNAPSHOT_VERSION,
                "task": self.task,
                "sections": self.sections,
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
        task, sections = s.get("task"), s.get("sections")
        if not isinstance(task, str) or not isinstance(sections, list):
            raise ValueError("essay: snapshot does not have the expected fields")
        essay = cls(task)
        for sec in sections:
            if not (
                isinstance(sec, dict)
                and isinstance(sec.get("section"), int)
                and isinstance(sec.get("text", sec.get("skipped")), str)
            ):
                raise ValueError("essay: snapshot has a malformed section")
            # _finish checks the numbering: 1, 2, 3, ... with no gaps.
            if "text" in sec:
                essay.add_section(sec["section"], sec["text"])
            else:
                essay.skip_section(sec["section"], sec["skipped"])
        return essay
