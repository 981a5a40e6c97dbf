//! Filters: one expression language everywhere, CEL.
//!
//! A filter sees four variables: `channel`, `type`, `id` (strings) and `data` (the event's JSON).
//! Costs shape the API (measured with `cel` 0.15, release build): a root `Context` costs ≈23 µs
//! because it registers every builtin, so there is one per thread, built once; turning an event's
//! JSON into CEL values costs ≈0.7 µs, so [`EventVars`] is built once per event and shared by every
//! filter that looks at it; evaluating a compiled program in an inner scope costs ≈1–2 µs.
//!
//! A filter that fails at run time (a missing field, a type mismatch) does not match: events that
//! don't have the shape a filter asks about are simply not selected.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use cel::{Context, Program, Value};

use crate::event::Event;

/// Longest filter source accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 2048;
/// Deepest bracket nesting accepted; bounds the parser's recursion and the evaluation cost.
pub const MAX_FILTER_DEPTH: usize = 32;
/// Most terms (AST nodes, after macro expansion) a filter may have.
pub const MAX_FILTER_NODES: usize = 512;
/// The variables a filter may use.
pub const VARIABLES: [&str; 4] = ["channel", "type", "id", "data"];

/// A filter that could not be compiled. `line` and `column` are 1-based positions in the source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter error at line {line}, column {column}: {message}")]
pub struct FilterError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

impl FilterError {
    fn at(message: impl Into<String>, line: usize, column: usize) -> Self {
        FilterError {
            message: message.into(),
            line,
            column,
        }
    }
}

/// A compiled filter. Cheap to clone; compile once per subscription (or once per distinct source).
#[derive(Clone)]
pub struct Filter {
    source: Arc<str>,
    program: Arc<Program>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Filter").field(&self.source).finish()
    }
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

thread_local! {
    // Building the standard context is the expensive part of CEL: do it once per thread.
    static ROOT: Context<'static, 'static> = Context::default();
}

fn position(source: &str, byte: usize) -> (usize, usize) {
    let before = &source[..byte.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl Filter {
    pub fn compile(source: &str) -> Result<Filter, FilterError> {
        if source.trim().is_empty() {
            return Err(FilterError::at("filter is empty", 1, 1));
        }
        if source.len() > MAX_FILTER_LEN {
            let (l, c) = position(source, MAX_FILTER_LEN);
            return Err(FilterError::at(
                format!("filter is longer than {MAX_FILTER_LEN} bytes"),
                l,
                c,
            ));
        }
        let mut depth = 0usize;
        for (i, b) in source.bytes().enumerate() {
            match b {
                b'(' | b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_FILTER_DEPTH {
                        let (l, c) = position(source, i);
                        return Err(FilterError::at(
                            format!("filter nests deeper than {MAX_FILTER_DEPTH} levels"),
                            l,
                            c,
                        ));
                    }
                }
                b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        // The parser is third-party code fed with client input: a panic in it must become a 400,
        // never take a connection task down.
        let parsed = std::panic::catch_unwind(AssertUnwindSafe(|| Program::compile(source)))
            .map_err(|_| FilterError::at("filter could not be parsed", 1, 1))?;
        let program = parsed.map_err(|errs| match errs.errors.first() {
            Some(e) => FilterError::at(
                e.msg.clone(),
                e.pos.0.max(1) as usize,
                e.pos.1.max(0) as usize + 1,
            ),
            None => FilterError::at("filter could not be parsed", 1, 1),
        })?;
        let mut shape = Shape::default();
        shape.walk(program.expression());
        if shape.nodes > MAX_FILTER_NODES {
            return Err(FilterError::at(
                format!("filter has more than {MAX_FILTER_NODES} terms"),
                1,
                1,
            ));
        }
        if let Some(unknown) = program
            .references()
            .variables()
            .into_iter()
            .find(|v| !VARIABLES.contains(v) && !shape.bound.iter().any(|b| b == v))
        {
            let byte = source.find(unknown).unwrap_or(0);
            let (l, c) = position(source, byte);
            return Err(FilterError::at(
                format!(
                    "unknown variable '{unknown}': filters can use {}",
                    VARIABLES.join(", ")
                ),
                l,
                c,
            ));
        }
        Ok(Filter {
            source: source.into(),
            program: Arc::new(program),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// True when the filter evaluates to `true` for this event; errors and non-booleans are false.
    pub fn matches(&self, vars: &EventVars) -> bool {
        ROOT.with(|root| {
            let mut scope = root.new_inner_scope();
            scope.add_variable_from_value("channel", vars.channel.clone());
            scope.add_variable_from_value("type", vars.kind.clone());
            scope.add_variable_from_value("id", vars.id.clone());
            scope.add_variable_from_value("data", vars.data.clone());
            matches!(self.program.execute(&scope), Ok(Value::Bool(true)))
        })
    }

    /// Convenience for one-off checks; on a hot path build [`EventVars`] once per event.
    pub fn matches_event(&self, event: &Event) -> bool {
        self.matches(&EventVars::new(event))
    }
}

/// What a compiled filter looks like: its size, and the names its macros bind
/// (`data.tags.exists(t, …)` binds `t`), which are not free variables.
#[derive(Default)]
struct Shape {
    nodes: usize,
    bound: Vec<String>,
}

impl Shape {
    fn walk(&mut self, e: &cel::IdedExpr) {
        use cel::common::ast::Expr;
        self.nodes += 1;
        if self.nodes > MAX_FILTER_NODES {
            return;
        }
        match &e.expr {
            Expr::Call(call) => {
                if let Some(t) = &call.target {
                    self.walk(t);
                }
                call.args.iter().for_each(|a| self.walk(a));
            }
            Expr::Comprehension(c) => {
                self.bound.push(c.iter_var.clone());
                self.bound.extend(c.iter_var2.clone());
                self.bound.push(c.accu_var.clone());
                for part in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    self.walk(part);
                }
            }
            Expr::List(l) => l.elements.iter().for_each(|x| self.walk(x)),
            Expr::Map(m) => m.entries.iter().for_each(|x| self.walk_entry(&x.expr)),
            Expr::Struct(s) => s.entries.iter().for_each(|x| self.walk_entry(&x.expr)),
            Expr::Select(s) => self.walk(&s.operand),
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    fn walk_entry(&mut self, e: &cel::common::ast::EntryExpr) {
        use cel::common::ast::EntryExpr;
        match e {
            EntryExpr::MapEntry(m) => {
                self.walk(&m.key);
                self.walk(&m.value);
            }
            EntryExpr::StructField(f) => self.walk(&f.value),
        }
    }
}

/// An event converted to CEL values, once, for every filter that looks at it.
#[derive(Debug, Clone)]
pub struct EventVars {
    channel: Value,
    kind: Value,
    id: Value,
    data: Value,
}

impl EventVars {
    pub fn new(event: &Event) -> Self {
        EventVars {
            channel: Value::String(Arc::new(event.channel.clone())),
            kind: Value::String(Arc::new(event.kind.clone())),
            id: Value::String(Arc::new(event.id.to_string())),
            data: json_to_cel(&event.data),
        }
    }
}

fn json_to_cel(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        J::String(s) => Value::String(Arc::new(s.clone())),
        J::Array(items) => Value::List(Arc::new(items.iter().map(json_to_cel).collect())),
        J::Object(map) => {
            let map: std::collections::HashMap<String, Value> = map
                .iter()
                .map(|(k, v)| (k.clone(), json_to_cel(v)))
                .collect();
            Value::Map(map.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventId;

    fn ev(channel: &str, data: serde_json::Value) -> Event {
        Event {
            id: EventId::new(100, 7),
            channel: channel.into(),
            kind: "alert".into(),
            data,
            time: 100,
        }
    }

    fn check(src: &str, event: &Event) -> bool {
        Filter::compile(src).unwrap().matches_event(event)
    }

    #[test]
    fn the_spec_example_selects_on_data() {
        let f = r#"data.severity >= 3 && data.region in ["eu", "us"]"#;
        assert!(check(
            f,
            &ev("a", serde_json::json!({"severity": 3, "region": "eu"}))
        ));
        assert!(!check(
            f,
            &ev("a", serde_json::json!({"severity": 2, "region": "eu"}))
        ));
        assert!(!check(
            f,
            &ev("a", serde_json::json!({"severity": 5, "region": "asia"}))
        ));
    }

    #[test]
    fn channel_type_and_id_are_variables() {
        let e = ev("chat.room1", serde_json::json!(null));
        assert!(check("channel.startsWith('chat.') && type == 'alert'", &e));
        assert!(check("id == '100-7'", &e));
        assert!(!check("channel == 'chat.room2'", &e));
    }

    #[test]
    fn missing_fields_and_type_errors_do_not_match() {
        let e = ev("a", serde_json::json!({"x": "text"}));
        assert!(!check("data.severity > 1", &e));
        assert!(!check("data.x > 1", &e));
        // A non-boolean result is not a match either.
        assert!(!check("data.x", &e));
        assert!(check("has(data.x) && !has(data.y)", &e));
    }

    #[test]
    fn macros_over_json_lists_work() {
        let e = ev(
            "a",
            serde_json::json!({"tags": ["a", "urgent"], "n": [1, 5]}),
        );
        assert!(check("data.tags.exists(t, t == 'urgent')", &e));
        assert!(check("data.n.all(v, v > 0)", &e));
        assert!(!check("data.n.all(v, v > 1)", &e));
    }

    #[test]
    fn large_and_fractional_numbers() {
        let e = ev("a", serde_json::json!({"big": u64::MAX, "f": 2.5}));
        assert!(check("data.f > 2.0", &e));
        assert!(check("data.big > 0u", &e));
    }

    #[test]
    fn syntax_errors_say_where() {
        let err = Filter::compile("data.x >").unwrap_err();
        assert_eq!(err.line, 1);
        assert!(err.column >= 8, "{err:?}");
        let err = Filter::compile("data.a == 1 &&\n  data.b ==").unwrap_err();
        assert_eq!(err.line, 2, "{err:?}");
    }

    #[test]
    fn unknown_variables_are_refused() {
        let err = Filter::compile("data.x == 1 || severity > 2").unwrap_err();
        assert!(err.message.contains("unknown variable 'severity'"), "{err}");
        assert_eq!(err.column, 16, "{err:?}");
    }

    #[test]
    fn limits_are_enforced() {
        assert!(Filter::compile("").is_err());
        assert!(Filter::compile(&format!("data.x == '{}'", "a".repeat(3000))).is_err());
        let deep = format!("{}true{}", "(".repeat(40), ")".repeat(40));
        let err = Filter::compile(&deep).unwrap_err();
        assert!(err.message.contains("nests deeper"), "{err}");
        assert_eq!(err.column, MAX_FILTER_DEPTH + 1);
    }
}
