//! The seed's essay writer as an agent component: ten cycles, one LLM call
//! each (`llm_call_cycle_N`), state = the essay so far.
//!
//! On `budget-exhausted` it stops writing and keeps what it has: the host
//! stops the run before the next cycle and checkpoints this state.

use guest_sdk::{llm, log, Agent, LlmError, Step};
use serde::{Deserialize, Serialize};

/// (progress line, what the section is about)
const SECTIONS: [(&str, &str); 10] = [
    ("Writing introduction paragraph...", "an introduction to the topic"),
    ("Expanding on AI history...", "the early history of artificial intelligence, from Turing to the Dartmouth workshop"),
    ("Discussing machine learning...", "how machine learning changed the field"),
    ("Exploring neural networks...", "neural networks and how they learn"),
    ("Analyzing deep learning...", "the deep learning breakthroughs of the 2010s"),
    ("Discussing neural networks applications...", "applications in vision, speech and language"),
    ("Examining large language models...", "large language models and what they can do"),
    ("Considering ethics and safety...", "ethical questions and safety"),
    ("Looking at the future...", "where the field may go next"),
    ("Concluding essay...", "a conclusion that ties the essay together"),
];

/// Only the end of the essay goes back into the prompt: the input stays
/// bounded, so each call's worst-case reservation stays small.
const CONTEXT_CHARS: usize = 600;

#[derive(Default, Serialize, Deserialize)]
struct Essay {
    task: String,
    /// One per section written; the next section is `sections.len()`, whatever
    /// the cycle number, so a run stopped by its budget and resumed later
    /// writes exactly the sections an uninterrupted run would.
    sections: Vec<String>,
}

impl Essay {
    fn text(&self) -> String {
        self.sections.join("\n\n")
    }

    fn tail(&self) -> String {
        let all = self.text();
        let start = all.char_indices().rev().nth(CONTEXT_CHARS).map(|(i, _)| i).unwrap_or(0);
        all[start..].to_string()
    }
}

impl Agent for Essay {
    fn init(&mut self, task: &str) -> Result<(), String> {
        self.task = task.to_string();
        Ok(())
    }

    fn step(&mut self, _cycle: u32) -> Result<Step, String> {
        let idx = self.sections.len();
        if idx >= SECTIONS.len() {
            return Ok(Step::Done(self.text()));
        }
        let (progress, about) = SECTIONS[idx];
        let user = if self.sections.is_empty() {
            format!("Task: {}\nWrite one paragraph: {about}.", self.task)
        } else {
            format!("Task: {}\nThe essay so far ends with:\n\"{}\"\nWrite the next paragraph: {about}.", self.task, self.tail())
        };
        let operation = format!("llm_call_cycle_{}", idx + 1);
        match llm::chat(Some("You are a concise essay writer."), &user, None, Some(&operation)) {
            Ok(c) => self.sections.push(c.text.trim().to_string()),
            Err(e @ LlmError::BudgetExhausted(_)) => {
                // Keep what we have; the host stops before the next cycle.
                log::warn(&format!("{}: keeping {} sections", e.message(), self.sections.len()));
                return Ok(Step::Continue(format!("Budget exhausted: keeping {} sections", self.sections.len())));
            }
            Err(e) => return Err(e.message()),
        }
        if self.sections.len() == SECTIONS.len() {
            Ok(Step::Done(self.text()))
        } else {
            Ok(Step::Continue(progress.to_string()))
        }
    }
}

guest_sdk::export_agent!(Essay);
