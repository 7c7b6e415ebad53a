"""componentize-py entry point: the `run` export of world `agent`, backed by essay.Essay."""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import llm, log
from wit_world.imports.types import (
    CompletionRequest,
    Level,
    LlmError_BudgetExhausted,
    LlmError_Denied,
    Message,
    Role,
    StepOutcome_Continue,
    StepOutcome_Done,
)

import essay

_essay = essay.Essay()


def _done():
    log.log(Level.INFO, f"essay: finished with {len(_essay.written())} of {essay.CYCLES} sections written")
    return StepOutcome_Done(_essay.text())


class Run(exports.Run):
    def init(self, task):
        global _essay
        _essay = essay.Essay(task)

    def step(self, cycle):
        section = _essay.next_section()
        if section is None:
            return _done()
        system, user = _essay.prompt(section)
        req = CompletionRequest(
            messages=[Message(Role.SYSTEM, system), Message(Role.USER, user)],
            model=None,
            # None: the host's --max-tokens, as for the Rust essay-agent (same cost per call).
            max_tokens=None,
            temperature=0.7,
            operation=essay.operation(section),
        )
        progress = f"{essay.title(section)}..."
        try:
            done = llm.complete(req)
        except Err as err:
            e = err.value
            if isinstance(e, LlmError_BudgetExhausted):
                # Keep what is written and stop asking: the host stops the run before the
                # next cycle and checkpoints this state, so a resume with more budget
                # picks up at this very section.
                kept = len(_essay.written())
                log.log(
                    Level.WARN,
                    f"essay: budget exhausted at section {section} "
                    f"(${e.value.spent_usd:.4f} of ${e.value.limit_usd:.4f}): keeping {kept} sections",
                )
                return StepOutcome_Continue(f"Budget exhausted: keeping {kept} sections")
            if isinstance(e, LlmError_Denied):
                # A hook refused this section; the essay goes on without it.
                log.log(Level.WARN, f"essay: section {section} skipped, call denied: {e.value}")
                _essay.skip_section(section, e.value)
                progress = f"{essay.title(section)}: skipped, denied"
            else:
                # Provider and request errors: the host has already retried; fail the step.
                raise Err(f"essay: section {section}: {type(e).__name__.split('_')[-1]}: {e.value}")
        else:
            _essay.add_section(section, done.text)
            log.log(
                Level.DEBUG,
                f"essay: section {section} has {len(done.text.split())} words "
                f"({done.usage.output_tokens} tokens, ${done.cost_usd:.6f}, {done.finish_reason})",
            )
        if _essay.next_section() is None:
            return _done()
        return StepOutcome_Continue(progress)

    def snapshot(self):
        return _essay.snapshot()

    def restore(self, state):
        global _essay
        try:
            _essay = essay.Essay.restore(state)
        except ValueError as err:
            raise Err(str(err))
