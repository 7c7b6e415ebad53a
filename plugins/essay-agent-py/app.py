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


def _finish(cycle):
    written = len(_essay.written())
    log.log(Level.INFO, f"essay: finished at cycle {cycle} with {written} of {essay.CYCLES} sections")
    return StepOutcome_Done(_essay.text())


class Run(exports.Run):
    def init(self, task):
        global _essay
        _essay = essay.Essay(task)

    def step(self, cycle):
        if _essay.stopped is not None or cycle > essay.CYCLES:
            return _finish(cycle)
        if cycle < 1:
            raise Err(f"essay: cycles start at 1, got {cycle}")
        system, user = _essay.prompt(cycle)
        req = CompletionRequest(
            messages=[Message(Role.SYSTEM, system), Message(Role.USER, user)],
            model=None,
            max_tokens=essay.SECTION_MAX_TOKENS,
            temperature=0.7,
            operation=essay.operation(cycle),
        )
        title = essay.title(cycle)
        try:
            done = llm.complete(req)
        except Err as err:
            e = err.value
            if isinstance(e, LlmError_BudgetExhausted):
                s = e.value
                reason = f"budget exhausted at cycle {cycle} (${s.spent_usd:.4f} of ${s.limit_usd:.4f})"
                log.log(Level.WARN, f"essay: {reason}; keeping what is written")
                _essay.stop(reason)
                return _finish(cycle)
            if isinstance(e, LlmError_Denied):
                log.log(Level.WARN, f"essay: section {cycle} skipped, call denied: {e.value}")
                _essay.skip_section(cycle, e.value)
                if cycle == essay.CYCLES:
                    return _finish(cycle)
                return StepOutcome_Continue(f"{title} (skipped: denied)")
            # Provider and request errors: the host has already retried; fail the step.
            raise Err(f"essay: cycle {cycle}: {type(e).__name__.split('_')[-1]}: {e.value}")
        _essay.add_section(cycle, done.text)
        log.log(
            Level.DEBUG,
            f"essay: section {cycle} has {len(done.text.split())} words "
            f"({done.usage.output_tokens} tokens, ${done.cost_usd:.6f}, {done.finish_reason})",
        )
        if cycle == essay.CYCLES:
            return _finish(cycle)
        return StepOutcome_Continue(title)

    def snapshot(self):
        return _essay.snapshot()

    def restore(self, state):
        global _essay
        try:
            _essay = essay.Essay.restore(state)
        except ValueError as err:
            raise Err(str(err))
