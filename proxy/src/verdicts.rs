//! Per-event filter verdicts: when one upstream event reaches many handoffs, it is converted to
//! CEL values once, and each distinct wake filter (by source text) is evaluated once.
//!
//! Every evaluation runs within the filter's budget ([`ssepush_origin::filter`]: a step count
//! and a time limit, after the compile-time limits refused anything costly on its face). A
//! filter over budget is no match for that event, is counted in
//! `ssepush_proxy_wake_filter_over_budget_total` and logged; the shared stream task it runs on
//! loses at most one budget per distinct filter and event.

use std::collections::HashMap;

use ssepush_origin::filter::{EventVars, Filter, Verdict};

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
        let v = match filter.evaluate(vars) {
            Verdict::Match => true,
            Verdict::NoMatch => false,
            Verdict::OverBudget => {
                metrics::counter!("ssepush_proxy_wake_filter_over_budget_total").increment(1);
                tracing::warn!(
                    filter = filter.source(),
                    "wake filter over its evaluation budget on an event; no wake for it"
                );
                false
            }
        };
        self.seen.insert(filter.source().to_owned(), v);
        v
    }
}
