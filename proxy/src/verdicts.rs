//! Per-event filter verdicts: when one upstream event reaches many handoffs, it is converted to
//! CEL values once, and each distinct wake filter (by source text) is evaluated once.

use std::collections::HashMap;

use ssepush_origin::filter::{EventVars, Filter};

/// Per-event filter verdicts: the event is converted to CEL values once, and each distinct
/// filter source is evaluated once, whatever the number of handoffs using it.
pub struct Verdicts<'a> {
    event: &'a ssepush_origin::Event,
    vars: Option<EventVars>,
    seen: HashMap<String, bool>,
}

impl<'a> Verdicts<'a> {
    pub fn new(event: &'a ssepush_origin::Event) -> Self {
        Verdicts {
            event,
            vars: None,
            seen: HashMap::new(),
        }
    }

    pub fn check(&mut self, filter: &Filter) -> bool {
        if let Some(v) = self.seen.get(filter.source()) {
            return *v;
        }
        let vars = self.vars.get_or_insert_with(|| EventVars::new(self.event));
        let v = filter.matches(vars);
        self.seen.insert(filter.source().to_owned(), v);
        v
    }
}
