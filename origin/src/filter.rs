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
//!
//! **Cost is bounded twice** (a client's filter must never stall a node). CEL has no loops but
//! its macros (`all`, `exists`, `exists_one`, `map`, `filter`) are comprehensions, and nesting
//! them multiplies: eight nested `all` over ten-element lists are 10⁸ steps. At compile time a
//! filter is refused (400, with the position of the offending macro) when its comprehensions
//! nest deeper than [`MAX_COMPREHENSION_NESTING`], when it has more than [`MAX_FILTER_MACROS`] of
//! them, when a list literal has more than [`MAX_LIST_LITERAL`] elements, or when its worst case,
//! estimated as the product of the list sizes over nested comprehensions times their bodies'
//! sizes (a list only known at run time counts as [`ASSUMED_LIST_SIZE`]), exceeds
//! [`MAX_FILTER_STEPS`]. At run time every comprehension iteration is charged its body's size
//! against the same step budget, and the clock against [`MAX_FILTER_TIME`]: over either, the
//! evaluation stops at once and answers [`Verdict::OverBudget`], and the caller ends the
//! subscription that asked for it. The charge is a hidden call the compiler puts in front of
//! each comprehension's loop condition (or its append guard, so `map`/`filter` keep cel's
//! in-place append path); source text cannot name it.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cel::common::ast::{CallExpr, ComprehensionExpr, Expr, LiteralValue, operators};
use cel::common::types::{CelBool, CelInt};
use cel::{Context, ExecutionError, IdedExpr, Program, Value};

use crate::event::Event;

/// Longest filter source accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 2048;
/// Deepest bracket nesting accepted; bounds the parser's recursion and the evaluation cost.
/// The parser runs on a stack of its own ([`PARSER_STACK`]): unoptimised, it needed more than
/// a tokio worker's 2 MiB for eleven nested `[` (found by the `cel_filter` fuzz corpus); a test
/// compiles the worst shapes this limit admits from a 2 MiB thread.
pub const MAX_FILTER_DEPTH: usize = 32;
/// Most terms (AST nodes, after macro expansion) a filter may have.
pub const MAX_FILTER_NODES: usize = 512;
/// Deepest nesting of comprehensions (`all`, `exists`, `exists_one`, `map`, `filter`).
pub const MAX_COMPREHENSION_NESTING: usize = 3;
/// Most comprehensions one filter may use.
pub const MAX_FILTER_MACROS: usize = 8;
/// Most elements one list literal may have.
pub const MAX_LIST_LITERAL: usize = 128;
/// The size assumed, when estimating cost at compile time, for a list known only at run time
/// (a list in the event's `data`); the run-time budget holds whatever its real size.
pub const ASSUMED_LIST_SIZE: u64 = 32;
/// Step budget of one evaluation: a step is one node of a comprehension's body evaluated once.
/// Issue 12's figure (26.9 s for the 8-level filter's ≈1.1×10⁸ iterations of a ≈5-node body)
/// puts a step near 50 ns, so the budget is a few milliseconds of one core.
pub const MAX_FILTER_STEPS: u64 = 100_000;
/// Wall-clock budget of one evaluation, checked as comprehensions iterate.
pub const MAX_FILTER_TIME: Duration = Duration::from_millis(20);
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

/// What one evaluation of a filter said about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The filter evaluated to `true`.
    Match,
    /// The filter evaluated to anything else, or failed (a missing field, a type mismatch).
    NoMatch,
    /// The evaluation was stopped: it used more than [`MAX_FILTER_STEPS`] steps or
    /// [`MAX_FILTER_TIME`]. Whoever asked for the filter is told and cut off.
    OverBudget,
}

impl Verdict {
    /// True only for [`Verdict::Match`].
    pub fn is_match(self) -> bool {
        self == Verdict::Match
    }
}

/// A compiled filter. Cheap to clone; compile once per subscription (or once per distinct source).
#[derive(Clone)]
pub struct Filter {
    source: Arc<str>,
    /// The program as compiled, its comprehensions instrumented with the budget charge.
    expr: Arc<IdedExpr>,
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

/// The hidden function that charges one comprehension iteration against the budget. `@` cannot
/// start an identifier in CEL source, so no filter can call (or shadow) it.
const CHARGE: &str = "@ssepush_charge";

thread_local! {
    // Building the standard context is the expensive part of CEL: do it once per thread.
    static ROOT: Context<'static, 'static> = {
        let mut ctx = Context::default();
        ctx.add_function(CHARGE, charge)
            .expect("the charge function's name is free");
        ctx
    };
    // The budget of the evaluation running on this thread (evaluation is synchronous, so one).
    static BUDGET: Cell<Budget> = const { Cell::new(Budget::IDLE) };
}

#[derive(Clone, Copy)]
struct Budget {
    steps_left: u64,
    deadline: Option<Instant>,
    charges: u32,
    exhausted: bool,
}

impl Budget {
    const IDLE: Budget = Budget {
        steps_left: u64::MAX,
        deadline: None,
        charges: 0,
        exhausted: false,
    };
}

/// Charges `weight` steps; an error (which cel propagates out of the comprehension at once) when
/// the budget is spent. Sticky: once exhausted, every later charge fails too, so an enclosing
/// macro that defers errors (`all`, `exists`) stops at its next iteration.
fn charge(weight: i64) -> Result<bool, ExecutionError> {
    BUDGET.with(|cell| {
        let mut b = cell.get();
        if !b.exhausted {
            let w = weight.max(1) as u64;
            b.charges = b.charges.wrapping_add(1);
            if b.steps_left < w {
                b.exhausted = true;
            } else {
                b.steps_left -= w;
                // Reading the clock costs ~20 ns: look at it every 64 iterations.
                if b.charges % 64 == 0 && b.deadline.is_some_and(|d| Instant::now() >= d) {
                    b.exhausted = true;
                }
            }
            cell.set(b);
        }
        if b.exhausted {
            Err(ExecutionError::function_error(
                CHARGE,
                "filter exceeded its evaluation budget",
            ))
        } else {
            Ok(true)
        }
    })
}

fn position(source: &str, byte: usize) -> (usize, usize) {
    let before = &source[..byte.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Stack for the CEL parser's thread: far more than any shape within [`MAX_FILTER_DEPTH`] and
/// [`MAX_FILTER_LEN`] needs, in any build (only the pages it touches become resident).
const PARSER_STACK: usize = 16 << 20;

/// Runs the third-party CEL parser on a thread of its own with [`PARSER_STACK`] of stack, and
/// turns a panic in it into an `Err`. Why a thread: the parser recurses through its whole
/// precedence ladder per bracket level, and an unoptimised build overflowed a tokio worker's
/// 2 MiB with eleven nested `[` — an overflow aborts the process, which no client input may do.
/// Parsing takes microseconds; a thread costs tens of them, once per filter compiled.
fn parse_on_own_stack(source: &str) -> std::thread::Result<Result<Program, cel::ParseErrors>> {
    let parse = || std::panic::catch_unwind(AssertUnwindSafe(|| Program::compile(source)));
    std::thread::scope(|scope| {
        match std::thread::Builder::new()
            .name("cel-parse".into())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, parse)
        {
            Ok(handle) => handle.join().and_then(|r| r),
            // No thread to be had (a process at its limits): parse here; the depth limit keeps a
            // release build within a worker's stack.
            Err(_) => parse(),
        }
    })
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
        let parsed = parse_on_own_stack(source)
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
        let mut cost = Cost {
            source,
            program: &program,
            macros: 0,
            error: None,
        };
        cost.estimate(program.expression(), 0);
        if let Some(err) = cost.error {
            return Err(err);
        }
        let mut expr = program.expression().clone();
        instrument(&mut expr);
        Ok(Filter {
            source: source.into(),
            expr: Arc::new(expr),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The source, shared (a key that costs no copy).
    pub fn source_arc(&self) -> Arc<str> {
        self.source.clone()
    }

    /// Evaluates the filter on this event within the budget ([`MAX_FILTER_STEPS`],
    /// [`MAX_FILTER_TIME`]). Errors and non-booleans are [`Verdict::NoMatch`].
    pub fn evaluate(&self, vars: &EventVars) -> Verdict {
        BUDGET.with(|b| {
            b.set(Budget {
                steps_left: MAX_FILTER_STEPS,
                deadline: Some(Instant::now() + MAX_FILTER_TIME),
                charges: 0,
                exhausted: false,
            })
        });
        let result = ROOT.with(|root| {
            let mut scope = root.new_inner_scope();
            scope.add_variable_from_value("channel", vars.channel.clone());
            scope.add_variable_from_value("type", vars.kind.clone());
            scope.add_variable_from_value("id", vars.id.clone());
            scope.add_variable_from_value("data", vars.data.clone());
            Value::resolve(&self.expr, &scope)
        });
        let budget = BUDGET.with(|b| b.replace(Budget::IDLE));
        if budget.exhausted {
            Verdict::OverBudget
        } else if matches!(result, Ok(Value::Bool(true))) {
            Verdict::Match
        } else {
            Verdict::NoMatch
        }
    }

    /// True when the filter evaluates to `true` for this event within its budget; errors,
    /// non-booleans and an evaluation over budget are false. Callers that must end whoever
    /// asked for an over-budget filter use [`evaluate`](Self::evaluate).
    pub fn matches(&self, vars: &EventVars) -> bool {
        self.evaluate(vars).is_match()
    }

    /// Convenience for one-off checks; on a hot path build [`EventVars`] once per event.
    pub fn matches_event(&self, event: &Event) -> bool {
        self.matches(&EventVars::new(event))
    }
}

/// The compile-time cost check: macro count, comprehension nesting, list literal sizes, and
/// the estimated worst case in steps (the unit of the run-time budget).
struct Cost<'a> {
    source: &'a str,
    program: &'a Program,
    macros: usize,
    /// The first limit broken, with the position of the node that broke it.
    error: Option<FilterError>,
}

impl Cost<'_> {
    fn fail(&mut self, e: &IdedExpr, message: String) {
        if self.error.is_some() {
            return;
        }
        let byte = self
            .program
            .source_info()
            .offset_for(e.id)
            .map_or(0, |(start, _)| start as usize);
        let (line, column) = position(self.source, byte);
        self.error = Some(FilterError::at(message, line, column));
    }

    /// Worst-case steps to evaluate `e` once; `nesting` counts the comprehensions around it.
    fn estimate(&mut self, e: &IdedExpr, nesting: usize) -> u64 {
        match &e.expr {
            Expr::Comprehension(c) => {
                self.macros += 1;
                if self.macros > MAX_FILTER_MACROS {
                    self.fail(
                        e,
                        format!("filter uses more than {MAX_FILTER_MACROS} macros (all, exists, exists_one, map, filter)"),
                    );
                }
                if nesting >= MAX_COMPREHENSION_NESTING {
                    self.fail(
                        e,
                        format!("filter nests macros (all, exists, exists_one, map, filter) deeper than {MAX_COMPREHENSION_NESTING} levels"),
                    );
                }
                let once = self.estimate(&c.iter_range, nesting)
                    + self.estimate(&c.accu_init, nesting)
                    + self.estimate(&c.result, nesting);
                let body = self.estimate(&c.loop_cond, nesting + 1)
                    + self.estimate(&c.loop_step, nesting + 1);
                let total = once.saturating_add(range_size(&c.iter_range).saturating_mul(body));
                if total > MAX_FILTER_STEPS {
                    self.fail(
                        e,
                        format!(
                            "filter is too costly: its macros may take about {total} steps on one event, the limit is {MAX_FILTER_STEPS}"
                        ),
                    );
                }
                total
            }
            Expr::List(l) => {
                if l.elements.len() > MAX_LIST_LITERAL {
                    self.fail(
                        e,
                        format!("list literal has more than {MAX_LIST_LITERAL} elements"),
                    );
                }
                l.elements
                    .iter()
                    .fold(1, |acc, x| acc.saturating_add(self.estimate(x, nesting)))
            }
            Expr::Call(call) => {
                let target = call
                    .target
                    .as_ref()
                    .map_or(0, |t| self.estimate(t, nesting));
                call.args.iter().fold(1 + target, |acc, x| {
                    acc.saturating_add(self.estimate(x, nesting))
                })
            }
            Expr::Map(m) => m.entries.iter().fold(1, |acc, x| match &x.expr {
                cel::common::ast::EntryExpr::MapEntry(m) => acc
                    .saturating_add(self.estimate(&m.key, nesting))
                    .saturating_add(self.estimate(&m.value, nesting)),
                cel::common::ast::EntryExpr::StructField(f) => {
                    acc.saturating_add(self.estimate(&f.value, nesting))
                }
            }),
            Expr::Struct(s) => s.entries.iter().fold(1, |acc, x| match &x.expr {
                cel::common::ast::EntryExpr::MapEntry(m) => acc
                    .saturating_add(self.estimate(&m.key, nesting))
                    .saturating_add(self.estimate(&m.value, nesting)),
                cel::common::ast::EntryExpr::StructField(f) => {
                    acc.saturating_add(self.estimate(&f.value, nesting))
                }
            }),
            Expr::Select(s) => 1 + self.estimate(&s.operand, nesting),
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => 1,
        }
    }
}

/// Upper estimate of how many elements a comprehension's range has: a literal's own size, a
/// `map`/`filter` result as large as its range, anything else [`ASSUMED_LIST_SIZE`].
fn range_size(e: &IdedExpr) -> u64 {
    match &e.expr {
        Expr::List(l) => l.elements.len() as u64,
        Expr::Map(m) => m.entries.len() as u64,
        Expr::Comprehension(c) => range_size(&c.iter_range),
        _ => ASSUMED_LIST_SIZE,
    }
}

/// Nodes evaluated per iteration by a comprehension body, not counting the bodies of
/// comprehensions nested in it (they charge their own iterations).
fn body_weight(e: &IdedExpr) -> u64 {
    match &e.expr {
        Expr::Comprehension(c) => {
            1 + body_weight(&c.iter_range) + body_weight(&c.accu_init) + body_weight(&c.result)
        }
        Expr::Call(call) => {
            1 + call.target.as_deref().map_or(0, body_weight)
                + call.args.iter().map(body_weight).sum::<u64>()
        }
        Expr::List(l) => 1 + l.elements.iter().map(body_weight).sum::<u64>(),
        Expr::Map(m) => {
            1 + m
                .entries
                .iter()
                .map(|x| match &x.expr {
                    cel::common::ast::EntryExpr::MapEntry(m) => {
                        body_weight(&m.key) + body_weight(&m.value)
                    }
                    cel::common::ast::EntryExpr::StructField(f) => body_weight(&f.value),
                })
                .sum::<u64>()
        }
        Expr::Struct(s) => {
            1 + s
                .entries
                .iter()
                .map(|x| match &x.expr {
                    cel::common::ast::EntryExpr::MapEntry(m) => {
                        body_weight(&m.key) + body_weight(&m.value)
                    }
                    cel::common::ast::EntryExpr::StructField(f) => body_weight(&f.value),
                })
                .sum::<u64>()
        }
        Expr::Select(s) => 1 + body_weight(&s.operand),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => 1,
    }
}

/// A synthetic node (id 0: no source position) of the instrumented program.
fn node(expr: Expr) -> IdedExpr {
    IdedExpr { id: 0, expr }
}

fn call(func: &str, args: Vec<IdedExpr>) -> IdedExpr {
    node(Expr::Call(CallExpr {
        func_name: func.to_owned(),
        target: None,
        args,
    }))
}

/// `@ssepush_charge(weight)`: true, or an error once the budget is spent.
fn charge_call(weight: u64) -> IdedExpr {
    let w = i64::try_from(weight).unwrap_or(i64::MAX);
    call(
        CHARGE,
        vec![node(Expr::Literal(LiteralValue::Int(CelInt::from(w))))],
    )
}

/// `charge ? then : false`. A conditional, not `&&`: cel's `&&` absorbs an error on one side
/// when the other is false, and the budget's error must always propagate.
fn charged(weight: u64, then: IdedExpr) -> IdedExpr {
    call(
        operators::CONDITIONAL,
        vec![
            charge_call(weight),
            then,
            node(Expr::Literal(LiteralValue::Boolean(CelBool::from(false)))),
        ],
    )
}

/// Puts a budget charge in front of every comprehension iteration. An error in the loop
/// condition (or in a `map`/`filter` append guard) leaves cel's comprehension at once.
fn instrument(e: &mut IdedExpr) {
    match &mut e.expr {
        Expr::Comprehension(c) => {
            instrument(&mut c.iter_range);
            instrument(&mut c.accu_init);
            instrument(&mut c.loop_cond);
            instrument(&mut c.loop_step);
            instrument(&mut c.result);
            let weight = 1 + body_weight(&c.loop_cond) + body_weight(&c.loop_step);
            if !append_guard(c, weight) {
                let cond = std::mem::take(&mut c.loop_cond);
                c.loop_cond = charged(weight, cond);
            }
        }
        Expr::Call(call) => {
            if let Some(t) = call.target.as_deref_mut() {
                instrument(t);
            }
            call.args.iter_mut().for_each(instrument);
        }
        Expr::List(l) => l.elements.iter_mut().for_each(instrument),
        Expr::Map(m) => m
            .entries
            .iter_mut()
            .for_each(|x| instrument_entry(&mut x.expr)),
        Expr::Struct(s) => s
            .entries
            .iter_mut()
            .for_each(|x| instrument_entry(&mut x.expr)),
        Expr::Select(s) => instrument(&mut s.operand),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn instrument_entry(e: &mut cel::common::ast::EntryExpr) {
    match e {
        cel::common::ast::EntryExpr::MapEntry(m) => {
            instrument(&mut m.key);
            instrument(&mut m.value);
        }
        cel::common::ast::EntryExpr::StructField(f) => instrument(&mut f.value),
    }
}

/// A `map`/`filter` comprehension (literal loop condition, result = accumulator, step
/// `@result + [x]` optionally guarded as `g ? @result + [x] : @result`) gets its charge in the
/// guard, keeping the shape cel appends in place for (its generic path copies the list on every
/// iteration). False when the comprehension has another shape.
fn append_guard(c: &mut ComprehensionExpr, weight: u64) -> bool {
    let accu = c.accu_var.clone();
    let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(n) if *n == accu);
    let is_append = |e: &IdedExpr| match &e.expr {
        Expr::Call(call) if call.func_name == operators::ADD && call.target.is_none() => {
            matches!(call.args.as_slice(), [l, r] if is_accu(l) && matches!(r.expr, Expr::List(_)))
        }
        _ => false,
    };
    if !is_accu(&c.result) || !matches!(c.loop_cond.expr, Expr::Literal(_)) {
        return false;
    }
    if is_append(&c.loop_step) {
        let step = std::mem::take(&mut c.loop_step);
        let otherwise = node(Expr::Ident(accu.clone()));
        c.loop_step = call(
            operators::CONDITIONAL,
            vec![charge_call(weight), step, otherwise],
        );
        return true;
    }
    if let Expr::Call(call) = &mut c.loop_step.expr
        && call.func_name == operators::CONDITIONAL
        && call.target.is_none()
        && let [guard, step, otherwise] = call.args.as_mut_slice()
        && is_accu(otherwise)
        && is_append(step)
    {
        let g = std::mem::take(guard);
        *guard = charged(weight, g);
        return true;
    }
    false
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

    /// Every shape the limits admit compiles on a thread with a tokio worker's stack (2 MiB),
    /// in whatever build the tests run in: bracket nesting of each kind and mixed at the depth
    /// limit, and the longest unary chains the length limit admits. A parser that recursed past
    /// the stack would abort the process here instead of answering 400.
    #[test]
    fn the_worst_shapes_within_the_limits_parse_on_a_worker_stack() {
        let d = MAX_FILTER_DEPTH;
        let mut inputs = vec![
            format!("{}true{}", "(".repeat(d), ")".repeat(d)),
            format!("size({}1{}) > 0", "[".repeat(d - 1), "]".repeat(d - 1)),
            format!("size({}{}) > 0", "{1:".repeat(d - 1), "}".repeat(d - 1)),
            format!(
                "size({}{}) > 0",
                "[{1:".repeat((d - 1) / 2),
                "}]".repeat((d - 1) / 2)
            ),
            format!("{}true", "!".repeat(MAX_FILTER_LEN - 4)),
            format!("{}1 > 0", "-".repeat(MAX_FILTER_LEN - 5)),
            format!("data{} == 1", ".a".repeat((MAX_FILTER_LEN - 10) / 2)),
        ];
        inputs.push(format!("{}true{}", "(!".repeat(d), ")".repeat(d)));
        for source in inputs {
            let shown = source.chars().take(40).collect::<String>();
            let outcome = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || Filter::compile(&source).map(|_| ()).map_err(|e| e.message))
                .unwrap()
                .join();
            assert!(
                outcome.is_ok(),
                "{shown}…: the parser overflowed a 2 MiB stack"
            );
        }
    }

    /// The filter of issue 12 §2: `levels` nested `all` over ten-element list literals.
    fn nested_all(levels: usize) -> String {
        let list = "[0,1,2,3,4,5,6,7,8,9]";
        let mut f = "true".to_owned();
        for v in 0..levels {
            f = format!("{list}.all(v{v}, {f})");
        }
        f
    }

    #[test]
    fn the_issue_filters_are_refused_with_a_position() {
        let eight = nested_all(8);
        assert!(
            eight.len() <= MAX_FILTER_LEN && eight.len() > 240,
            "{}",
            eight.len()
        );
        for levels in [7, 8] {
            let err = Filter::compile(&nested_all(levels)).unwrap_err();
            assert!(err.message.contains("nests macros"), "{err}");
            // The first macro past the limit: the fourth `.all(` from the left.
            let src = nested_all(levels);
            let fourth = src
                .match_indices(".all(")
                .nth(levels - 1 - MAX_COMPREHENSION_NESTING);
            assert_eq!(err.line, 1);
            assert!(fourth.is_some() && err.column > 1, "{err:?}");
        }
    }

    #[test]
    fn the_cost_estimate_refuses_big_products() {
        let list = format!(
            "[{}]",
            (0..100)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let f = format!("{list}.all(a, {list}.all(b, {list}.all(c, true)))");
        let err = Filter::compile(&f).unwrap_err();
        assert!(err.message.contains("too costly"), "{err}");
        let many = (0..=MAX_FILTER_MACROS)
            .map(|i| format!("data.l.exists(x{i}, x{i} == {i})"))
            .collect::<Vec<_>>()
            .join(" || ");
        let err = Filter::compile(&many).unwrap_err();
        assert!(err.message.contains("more than"), "{err}");
        assert!(err.column > 1, "positioned at the extra macro: {err:?}");
        let long = format!(
            "data.x in [{}]",
            (0..200)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let err = Filter::compile(&long).unwrap_err();
        assert!(err.message.contains("list literal"), "{err}");
        // Two levels over data lists, and three small literal levels, are fine.
        assert!(Filter::compile("data.a.exists(x, data.b.exists(y, x == y))").is_ok());
        assert!(Filter::compile(&nested_all(3)).is_ok());
    }

    #[test]
    fn a_filter_over_budget_at_run_time_stops_and_says_so() {
        // Within every compile-time limit, but 2,000 × 2,000 iterations on this event.
        let f = Filter::compile("data.a.exists(x, data.a.exists(y, x + y < 0))").unwrap();
        let big = ev("a", serde_json::json!({"a": (0..2000).collect::<Vec<_>>()}));
        let small = ev("a", serde_json::json!({"a": [1, 2, 3]}));
        let started = Instant::now();
        assert_eq!(f.evaluate(&EventVars::new(&big)), Verdict::OverBudget);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // The budget is per evaluation: the next one starts afresh.
        assert_eq!(f.evaluate(&EventVars::new(&small)), Verdict::NoMatch);
        let hit = Filter::compile("data.a.exists(x, data.a.exists(y, x + y == 5))").unwrap();
        assert_eq!(hit.evaluate(&EventVars::new(&small)), Verdict::Match);
        assert!(!f.matches_event(&big), "over budget is not a match");
        // The map/filter path is charged too.
        let m =
            Filter::compile("data.a.map(x, data.a.filter(y, y > x).size()).size() > 0").unwrap();
        assert_eq!(m.evaluate(&EventVars::new(&big)), Verdict::OverBudget);
    }

    #[test]
    fn instrumented_macros_keep_their_meaning() {
        let e = ev("a", serde_json::json!({"n": [1, 5, 7], "m": {"k": 1}}));
        assert!(check("data.n.map(x, x * 2) == [2, 10, 14]", &e));
        assert!(check("data.n.filter(x, x > 1) == [5, 7]", &e));
        assert!(check("data.n.map(x, x > 1, x) == [5, 7]", &e));
        assert!(check("data.n.exists_one(x, x == 5)", &e));
        assert!(!check("data.n.exists_one(x, x > 1)", &e));
        assert!(check("data.n.all(x, x > 0) && !data.n.all(x, x > 1)", &e));
        assert!(check("data.m.exists(k, k == 'k')", &e));
        // Errors inside a macro still follow CEL's rules (a false elsewhere absorbs them).
        assert!(check("data.n.exists(x, x.foo == 1) || true", &e));
        assert!(!check("data.n.all(x, x.foo == 1)", &e));
    }
}
