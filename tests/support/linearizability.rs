//! A linearizability checker for key-value histories, Wing–Gong style with Lowe's memoization
//! (as in Porcupine), where every key is an independent register.
//!
//! A history is a list of [`Operation`]s: who called what on which key, when it was called, when
//! (and whether) it returned, and what it answered. [`check`] splits the history per key and, for
//! each key, searches for an order of the operations that (1) respects real time — an operation
//! that returned before another was called comes first — and (2) gives every operation the answer
//! it really got from a sequential register. The search is a depth-first search over the
//! operations that may come next ("minimal calls": those called before the earliest pending
//! return), memoizing the (set of operations done, register state) pairs already explored.
//!
//! The register models what etcd gives for one key: a value and its mod revision (0 while the
//! key is absent), put, get, delete, and a compare-and-set transaction that compares the value or
//! the mod revision. Revisions are optional in answers; when known they are checked too (a get
//! sees the mod revision of the write it reads, and writes to a key have increasing revisions).
//!
//! Operations with an unknown outcome (`ret: None`: the client got an error or a timeout, so the
//! write may or may not have happened) may take effect at any point after their call, or never:
//! their return is placed after the end of the history, where taking effect is the same as never
//! taking effect since nothing observes it. Gets with an unknown outcome tell nothing and are
//! dropped. Each key is assumed absent when the history starts.
//!
//! The search is exponential in the worst case, so it is bounded: more than
//! `Checker::max_ops_per_key` operations on a key, or more than `Checker::max_steps_per_key`
//! search steps, is reported as an error of kind [`ViolationKind::TooLarge`] rather than running
//! for ever.
//!
//! [`Recorder`] records a history from concurrent etcd clients (times taken around each call,
//! errors recorded as unknown outcomes, except refused connections: those requests were never
//! sent).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A value written to a key (values are compared as strings; unique values make the check
/// sharper and faster).
pub type Value = String;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Put(Value),
    Get,
    Delete,
    /// A transaction `if <expect> then put(new)`: etcd's compare-and-set.
    Cas {
        expect: Expect,
        new: Value,
    },
}

/// The comparison of a compare-and-set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expect {
    /// The key exists with this value (like etcd, a value compare on an absent key fails).
    Value(Value),
    /// The key's mod revision is this; 0 means the key is absent.
    ModRevision(i64),
}

/// What a read returned for a key that exists.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Read {
    pub value: Value,
    /// The key's mod revision, if the test recorded it.
    pub mod_revision: Option<i64>,
}

/// What a client got back. `revision` fields are the revision of the write (the response
/// header's revision for a put or a successful compare-and-set), if known.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Out {
    Put {
        revision: Option<i64>,
    },
    Get(Option<Read>),
    /// `deleted`: whether a key was deleted, if known.
    Delete {
        deleted: Option<bool>,
    },
    Cas {
        succeeded: bool,
        revision: Option<i64>,
    },
    /// No answer (same as `ret: None`).
    Unknown,
}

/// One operation of a history. Times are nanoseconds on one clock (any origin).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub client: usize,
    pub key: String,
    pub call: u64,
    /// When the answer came back; `None` if it never did or the outcome is unknown.
    pub ret: Option<u64>,
    pub input: Op,
    pub output: Out,
}

impl Operation {
    /// An operation that returned `output` at `ret`.
    pub fn completed(
        client: usize,
        key: &str,
        call: u64,
        ret: u64,
        input: Op,
        output: Out,
    ) -> Operation {
        Operation {
            client,
            key: key.to_string(),
            call,
            ret: Some(ret),
            input,
            output,
        }
    }

    /// An operation whose outcome is unknown (error, timeout, no answer).
    pub fn unknown(client: usize, key: &str, call: u64, input: Op) -> Operation {
        Operation {
            client,
            key: key.to_string(),
            call,
            ret: None,
            input,
            output: Out::Unknown,
        }
    }

    /// Whether the outcome is unknown: it may have taken effect any time after its call, or not.
    pub fn is_unknown(&self) -> bool {
        self.ret.is_none() || self.output == Out::Unknown
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ret = match self.ret {
            Some(r) => format!("{}", Nanos(r)),
            None => "?".to_string(),
        };
        write!(
            f,
            "client {} [{} .. {}] {:?} -> ",
            self.client,
            Nanos(self.call),
            ret,
            self.input
        )?;
        if self.is_unknown() {
            write!(f, "unknown outcome")
        } else {
            write!(f, "{:?}", self.output)
        }
    }
}

/// Nanoseconds shown as seconds.
struct Nanos(u64);

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09}s",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

/// Why a history was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// No linearization exists: the history is wrong.
    NotLinearizable,
    /// The history is malformed (a return before its call, an answer of the wrong kind).
    Invalid,
    /// The check was refused or given up (too many operations or search steps): no verdict.
    TooLarge,
}

/// A key whose history was not accepted, with an explanation naming the operations involved.
#[derive(Clone, Debug)]
pub struct Violation {
    pub key: String,
    pub kind: ViolationKind,
    pub explanation: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key {:?}: {:?}: {}",
            self.key, self.kind, self.explanation
        )
    }
}

impl std::error::Error for Violation {}

/// The checker's bounds.
#[derive(Clone, Copy, Debug)]
pub struct Checker {
    /// Keys with more operations than this are refused.
    pub max_ops_per_key: usize,
    /// Search steps after which a key's check is given up.
    pub max_steps_per_key: u64,
}

impl Default for Checker {
    fn default() -> Self {
        Checker {
            max_ops_per_key: 5_000,
            max_steps_per_key: 20_000_000,
        }
    }
}

/// Checks a history with the default bounds.
pub fn check(history: &[Operation]) -> Result<(), Violation> {
    Checker::default().check(history)
}

impl Checker {
    /// Checks every key of the history (in key order); the first key that fails is reported.
    pub fn check(&self, history: &[Operation]) -> Result<(), Violation> {
        let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
        for op in history {
            by_key.entry(op.key.as_str()).or_default().push(op);
        }
        for (key, ops) in by_key {
            self.check_key(key, &ops)?;
        }
        Ok(())
    }

    /// Checks the operations of one key.
    pub fn check_key(&self, key: &str, ops: &[&Operation]) -> Result<(), Violation> {
        let fail = |kind, explanation| Violation {
            key: key.to_string(),
            kind,
            explanation,
        };
        let ops: Vec<&Operation> = ops
            .iter()
            .copied()
            .filter(|op| !(op.is_unknown() && op.input == Op::Get))
            .collect();
        if ops.len() > self.max_ops_per_key {
            return Err(fail(
                ViolationKind::TooLarge,
                format!(
                    "{} operations on one key, more than the checker's limit of {}; \
                     spread the load over more keys",
                    ops.len(),
                    self.max_ops_per_key
                ),
            ));
        }
        let problem = Problem::new(&ops).map_err(|e| fail(ViolationKind::Invalid, e))?;
        match Search::new(&problem, self.max_steps_per_key).run() {
            Outcome::Linearizable => Ok(()),
            Outcome::GaveUp(steps) => Err(fail(
                ViolationKind::TooLarge,
                format!(
                    "gave up after {steps} search steps on {} operations (too much \
                     concurrency on one key)",
                    ops.len()
                ),
            )),
            Outcome::Stuck(stuck) => Err(fail(
                ViolationKind::NotLinearizable,
                problem.explain(&stuck),
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The register model, on interned values.

/// A value id (index into `Problem::values`).
type Vid = u32;

/// The register: its value and what is known of its mod revision: exactly `rev`, or (after a
/// write whose revision is not known) only that it is above `rev`. Absent keys have mod
/// revision exactly 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Reg {
    value: Option<Vid>,
    rev: i64,
    exact: bool,
}

const ABSENT: Reg = Reg {
    value: None,
    rev: 0,
    exact: true,
};

/// An operation with interned values; `out: None` for an unknown outcome.
#[derive(Clone, Debug)]
struct Step {
    input: IOp,
    out: Option<IOut>,
}

#[derive(Clone, Debug)]
enum IOp {
    Put(Vid),
    Get,
    Delete,
    Cas { expect: IExpect, new: Vid },
}

#[derive(Clone, Copy, Debug)]
enum IExpect {
    Value(Vid),
    ModRevision(i64),
}

#[derive(Clone, Debug)]
enum IOut {
    Put(Option<i64>),
    Get(Option<(Vid, Option<i64>)>),
    Delete(Option<bool>),
    Cas(bool, Option<i64>),
}

/// Result of a comparison on a register whose revision may be unknown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tri {
    Yes,
    No,
    Maybe,
}

impl Reg {
    fn compare(&self, expect: IExpect) -> Tri {
        match expect {
            IExpect::Value(v) if self.value == Some(v) => Tri::Yes,
            IExpect::Value(_) => Tri::No,
            IExpect::ModRevision(e) if self.exact && e == self.rev => Tri::Yes,
            IExpect::ModRevision(e) if !self.exact && e > self.rev => Tri::Maybe,
            IExpect::ModRevision(_) => Tri::No,
        }
    }

    /// The register after a write of `value` at revision `rev`, if that revision can follow
    /// this register's (revisions of one key increase).
    fn written(&self, value: Vid, rev: Option<i64>) -> Option<Reg> {
        match rev {
            Some(new) if new <= self.rev => None,
            Some(new) => Some(Reg {
                value: Some(value),
                rev: new,
                exact: true,
            }),
            None => Some(Reg {
                value: Some(value),
                rev: self.rev,
                exact: false,
            }),
        }
    }

    /// The states this register can be in after `step`, appended to `next` (none: `step` cannot
    /// happen now).
    fn apply(&self, step: &Step, next: &mut Vec<Reg>) {
        match (&step.input, &step.out) {
            (IOp::Put(v), Some(IOut::Put(rev))) => next.extend(self.written(*v, *rev)),
            (IOp::Put(v), None) => next.extend(self.written(*v, None)),
            (IOp::Get, Some(IOut::Get(read))) => next.extend(self.read(*read)),
            (IOp::Get, None) => next.push(*self),
            (IOp::Delete, Some(IOut::Delete(deleted))) => {
                if deleted.is_none() || *deleted == Some(self.value.is_some()) {
                    next.push(ABSENT);
                }
            }
            (IOp::Delete, None) => next.push(ABSENT),
            (IOp::Cas { expect, new }, out) => self.cas(*expect, *new, out, next),
            _ => unreachable!("answers are checked against requests in Problem::new"),
        }
    }

    /// The register after a get that answered `read`, if it can answer that.
    fn read(&self, read: Option<(Vid, Option<i64>)>) -> Option<Reg> {
        match read {
            None if self.value.is_none() => Some(*self),
            None => None,
            Some((v, rev)) => {
                if self.value != Some(v) {
                    return None;
                }
                match rev {
                    None => Some(*self),
                    Some(seen) if self.exact && seen != self.rev => None,
                    Some(seen) if !self.exact && seen <= self.rev => None,
                    Some(seen) => Some(Reg {
                        value: self.value,
                        rev: seen,
                        exact: true,
                    }),
                }
            }
        }
    }

    fn cas(&self, expect: IExpect, new: Vid, out: &Option<IOut>, next: &mut Vec<Reg>) {
        let holds = self.compare(expect);
        let (may_succeed, may_fail, rev) = match out {
            Some(IOut::Cas(true, rev)) => (holds != Tri::No, false, *rev),
            Some(IOut::Cas(false, _)) => (false, holds != Tri::Yes, None),
            None => (holds != Tri::No, holds != Tri::Yes, None),
            _ => unreachable!("answers are checked against requests in Problem::new"),
        };
        if may_succeed {
            next.extend(self.written(new, rev));
        }
        if may_fail {
            next.push(*self);
        }
    }
}

/// The set of states the register may be in (sorted, without duplicates; usually one).
type States = Vec<Reg>;

fn apply_all(states: &States, step: &Step) -> States {
    let mut next = Vec::with_capacity(states.len());
    for reg in states {
        reg.apply(step, &mut next);
    }
    next.sort_unstable();
    next.dedup();
    next
}

// ---------------------------------------------------------------------------------------------
// One key's history, prepared for the search.

struct Problem<'a> {
    ops: Vec<&'a Operation>,
    steps: Vec<Step>,
    values: Vec<&'a str>,
}

impl<'a> Problem<'a> {
    fn new(ops: &[&'a Operation]) -> Result<Problem<'a>, String> {
        let mut interner = Interner::default();
        let mut steps = Vec::with_capacity(ops.len());
        for op in ops {
            if let Some(ret) = op.ret {
                if ret < op.call {
                    return Err(format!("returns before its call: {op}"));
                }
            }
            steps.push(interner.step(op)?);
        }
        Ok(Problem {
            ops: ops.to_vec(),
            steps,
            values: interner.values,
        })
    }

    /// Describes where the search got stuck.
    fn explain(&self, stuck: &Stuck) -> String {
        let mut s = format!(
            "not linearizable ({} operations on the key). The longest linearizable prefix has \
             {} operations",
            self.ops.len(),
            stuck.prefix.len()
        );
        let shown = stuck.prefix.len().saturating_sub(8);
        if shown > 0 {
            s.push_str(&format!(
                ", of which the last {} are",
                stuck.prefix.len() - shown
            ));
        }
        s.push_str(":\n");
        for &i in &stuck.prefix[shown..] {
            s.push_str(&format!("  #{i} {}\n", self.ops[i]));
        }
        s.push_str(&format!(
            "after which the register is {}.\nNone of the operations that may come next can: \
             {} must have taken effect by its return, and every candidate (called before that \
             return) was tried:\n",
            self.describe_states(&stuck.states),
            self.describe_op(stuck.blocking)
        ));
        for &i in &stuck.candidates {
            s.push_str(&format!("  #{i} {}\n", self.ops[i]));
        }
        s
    }

    fn describe_op(&self, i: usize) -> String {
        format!("#{i} {}", self.ops[i])
    }

    fn describe_states(&self, states: &States) -> String {
        let one = |r: &Reg| {
            let value = match r.value {
                Some(v) => format!("{:?}", self.values[v as usize]),
                None => "absent".to_string(),
            };
            match (r.value, r.exact) {
                (None, _) => value,
                (Some(_), true) => format!("{value} (mod revision {})", r.rev),
                (Some(_), false) => format!("{value} (mod revision above {})", r.rev),
            }
        };
        let all: Vec<String> = states.iter().map(one).collect();
        all.join(" or ")
    }
}

/// Maps values to small ids.
#[derive(Default)]
struct Interner<'a> {
    ids: HashMap<&'a str, Vid>,
    values: Vec<&'a str>,
}

impl<'a> Interner<'a> {
    fn id(&mut self, value: &'a str) -> Vid {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = self.values.len() as Vid;
        self.values.push(value);
        self.ids.insert(value, id);
        id
    }

    fn step(&mut self, op: &'a Operation) -> Result<Step, String> {
        let input = match &op.input {
            Op::Put(v) => IOp::Put(self.id(v)),
            Op::Get => IOp::Get,
            Op::Delete => IOp::Delete,
            Op::Cas { expect, new } => IOp::Cas {
                expect: match expect {
                    Expect::Value(v) => IExpect::Value(self.id(v)),
                    Expect::ModRevision(r) => IExpect::ModRevision(*r),
                },
                new: self.id(new),
            },
        };
        if op.is_unknown() {
            return Ok(Step { input, out: None });
        }
        let out = match (&input, &op.output) {
            (IOp::Put(_), Out::Put { revision }) => IOut::Put(*revision),
            (IOp::Get, Out::Get(read)) => {
                IOut::Get(read.as_ref().map(|r| (self.id(&r.value), r.mod_revision)))
            }
            (IOp::Delete, Out::Delete { deleted }) => IOut::Delete(*deleted),
            (
                IOp::Cas { .. },
                Out::Cas {
                    succeeded,
                    revision,
                },
            ) => IOut::Cas(*succeeded, *revision),
            _ => return Err(format!("answer of the wrong kind: {op}")),
        };
        Ok(Step {
            input,
            out: Some(out),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The search (Wing & Gong's algorithm with Lowe's memoization).

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// A call or return event; entries are nodes 1.. of a doubly linked list sorted by time, node 0
/// being the head.
#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    /// For a call: its return's node, if the operation has a known return.
    ret: usize,
}

enum Outcome {
    Linearizable,
    GaveUp(u64),
    Stuck(Stuck),
}

/// Where the search got deepest before failing.
struct Stuck {
    prefix: Vec<usize>,
    states: States,
    blocking: usize,
    candidates: Vec<usize>,
}

struct Search<'p, 'a> {
    problem: &'p Problem<'a>,
    max_steps: u64,
    entries: Vec<Entry>,
    next: Vec<usize>,
    prev: Vec<usize>,
    returns_left: usize,
}

impl<'p, 'a> Search<'p, 'a> {
    fn new(problem: &'p Problem<'a>, max_steps: u64) -> Self {
        let entries = Self::entries(problem);
        let n = entries.len();
        let next = (0..n)
            .map(|i| if i + 1 < n { i + 1 } else { NIL })
            .collect();
        let prev = (0..n).map(|i| if i == 0 { NIL } else { i - 1 }).collect();
        let returns_left = entries[1..].iter().filter(|e| !e.is_call).count();
        Search {
            problem,
            max_steps,
            entries,
            next,
            prev,
            returns_left,
        }
    }

    /// The head followed by the call and return events sorted by time; at equal times calls
    /// come first (the operations are then taken as concurrent).
    fn entries(problem: &Problem<'_>) -> Vec<Entry> {
        let mut events: Vec<(u64, bool, usize)> = Vec::new();
        for (i, op) in problem.ops.iter().enumerate() {
            events.push((op.call, false, i));
            if !op.is_unknown() {
                events.push((op.ret.expect("known outcome"), true, i));
            }
        }
        events.sort_unstable();
        let head = Entry {
            op: NIL,
            is_call: false,
            ret: NIL,
        };
        let mut entries = vec![head];
        let mut ret_node = vec![NIL; problem.ops.len()];
        for (node, &(_, is_return, op)) in events.iter().enumerate() {
            if is_return {
                ret_node[op] = node + 1;
            }
        }
        for &(_, is_return, op) in &events {
            entries.push(Entry {
                op,
                is_call: !is_return,
                ret: if is_return { NIL } else { ret_node[op] },
            });
        }
        entries
    }

    fn unlink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        if n != NIL {
            self.prev[n] = x;
        }
    }

    /// Takes a call (and its return) out of the list: the operation is linearized.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let ret = self.entries[call].ret;
        if ret != NIL {
            self.unlink(ret);
            self.returns_left -= 1;
        }
    }

    /// Undoes `lift` (in reverse order, as dancing links require).
    fn unlift(&mut self, call: usize) {
        let ret = self.entries[call].ret;
        if ret != NIL {
            self.relink(ret);
            self.returns_left += 1;
        }
        self.relink(call);
    }

    /// The search (operations that may come next are tried in the order of their calls).
    fn run(mut self) -> Outcome {
        let n = self.problem.ops.len();
        let mut state: States = vec![ABSENT];
        let mut done = BitSet::new(n);
        let mut seen: HashSet<(BitSet, States)> = HashSet::new();
        let mut stack: Vec<(usize, States)> = Vec::new();
        let mut stuck: Option<Stuck> = None;
        let mut entry = self.next[HEAD];
        let mut steps = 0u64;
        // Once only calls of unknown outcome remain, they can all take effect at the end.
        while self.returns_left > 0 {
            steps += 1;
            if steps > self.max_steps {
                return Outcome::GaveUp(steps);
            }
            let e = self.entries[entry];
            if e.is_call {
                let next = apply_all(&state, &self.problem.steps[e.op]);
                if !next.is_empty() {
                    done.set(e.op);
                    if seen.insert((done.clone(), next.clone())) {
                        stack.push((entry, std::mem::replace(&mut state, next)));
                        self.lift(entry);
                        entry = self.next[HEAD];
                        continue;
                    }
                    done.clear(e.op);
                }
                entry = self.next[entry];
            } else {
                // A return whose operation could not be placed before it: backtrack.
                if stuck.as_ref().is_none_or(|s| s.prefix.len() < stack.len()) {
                    stuck = Some(self.stuck_here(&stack, &state, e.op));
                }
                let Some((call, previous)) = stack.pop() else {
                    return Outcome::Stuck(stuck.expect("recorded when stuck"));
                };
                state = previous;
                done.clear(self.entries[call].op);
                self.unlift(call);
                entry = self.next[call];
            }
        }
        Outcome::Linearizable
    }

    /// Records the current dead end: the linearized prefix, the state, the operation whose
    /// return was reached and the candidates that were tried before it.
    fn stuck_here(&self, stack: &[(usize, States)], state: &States, blocking: usize) -> Stuck {
        let prefix = stack
            .iter()
            .map(|(call, _)| self.entries[*call].op)
            .collect();
        let mut candidates = Vec::new();
        let mut node = self.next[HEAD];
        while node != NIL && self.entries[node].is_call {
            candidates.push(self.entries[node].op);
            node = self.next[node];
        }
        Stuck {
            prefix,
            states: state.clone(),
            blocking,
            candidates,
        }
    }
}

/// A fixed-size set of operation indices.
#[derive(Clone, PartialEq, Eq, Hash)]
struct BitSet(Vec<u64>);

impl BitSet {
    fn new(n: usize) -> Self {
        BitSet(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

// ---------------------------------------------------------------------------------------------
// Recording a history from etcd clients.

/// Records operations from concurrent clients against one clock; share it with `Arc`.
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Operation>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder::default())
    }

    /// Nanoseconds since the recorder was made.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Records an operation called at `call` (from `now()`); `output: None` for an unknown
    /// outcome (error or timeout), else it returned now.
    pub fn record(&self, client: usize, key: &str, call: u64, input: Op, output: Option<Out>) {
        let op = match output {
            Some(out) => Operation::completed(client, key, call, self.now(), input, out),
            None => Operation::unknown(client, key, call, input),
        };
        self.ops.lock().unwrap().push(op);
    }

    /// The operations recorded so far.
    pub fn history(&self) -> Vec<Operation> {
        self.ops.lock().unwrap().clone()
    }

    /// Checks the history recorded so far.
    pub fn check(&self) -> Result<(), Violation> {
        check(&self.history())
    }

    /// Puts through `client` and records it; returns the response's revision.
    pub async fn put(
        &self,
        id: usize,
        client: &mut etcd_client::Client,
        key: &str,
        value: &str,
    ) -> Result<i64, etcd_client::Error> {
        let call = self.now();
        let r = client.put(key, value, None).await;
        if never_sent(&r) {
            return r.map(|_| 0);
        }
        let revision = r.as_ref().ok().map(header_revision);
        let out = revision.map(|revision| Out::Put { revision });
        self.record(id, key, call, Op::Put(value.to_string()), out);
        r.map(|r| header_revision(&r).unwrap_or(0))
    }

    /// Gets (linearizable read) through `client` and records it.
    pub async fn get(
        &self,
        id: usize,
        client: &mut etcd_client::Client,
        key: &str,
    ) -> Result<Option<Read>, etcd_client::Error> {
        let call = self.now();
        let r = client.get(key, None).await;
        let read = r.as_ref().ok().map(|r| {
            r.kvs().first().map(|kv| Read {
                value: String::from_utf8_lossy(kv.value()).into_owned(),
                mod_revision: Some(kv.mod_revision()),
            })
        });
        self.record(id, key, call, Op::Get, read.clone().map(Out::Get));
        r.map(|_| read.flatten())
    }

    /// Deletes through `client` and records it; returns whether a key was deleted.
    pub async fn delete(
        &self,
        id: usize,
        client: &mut etcd_client::Client,
        key: &str,
    ) -> Result<bool, etcd_client::Error> {
        let call = self.now();
        let r = client.delete(key, None).await;
        if never_sent(&r) {
            return r.map(|_| false);
        }
        let deleted = r.as_ref().ok().map(|r| r.deleted() > 0);
        let out = deleted.map(|d| Out::Delete { deleted: Some(d) });
        self.record(id, key, call, Op::Delete, out);
        r.map(|r| r.deleted() > 0)
    }

    /// A transaction `if <expect> then put(key, new)` through `client`, recorded; returns
    /// whether it succeeded.
    pub async fn cas(
        &self,
        id: usize,
        client: &mut etcd_client::Client,
        key: &str,
        expect: Expect,
        new: &str,
    ) -> Result<bool, etcd_client::Error> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let compare = match &expect {
            Expect::Value(v) => Compare::value(key, CompareOp::Equal, v.as_str()),
            Expect::ModRevision(r) => Compare::mod_revision(key, CompareOp::Equal, *r),
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(key, new, None)]);
        let call = self.now();
        let r = client.txn(txn).await;
        if never_sent(&r) {
            return r.map(|_| false);
        }
        let out = r.as_ref().ok().map(|r| Out::Cas {
            succeeded: r.succeeded(),
            revision: if r.succeeded() {
                r.header().map(|h| h.revision())
            } else {
                None
            },
        });
        let input = Op::Cas {
            expect,
            new: new.to_string(),
        };
        self.record(id, key, call, input, out);
        r.map(|r| r.succeeded())
    }
}

/// Whether a request certainly never reached the server: the connection to it was refused
/// (the node is down). Such writes had no effect and are not recorded; every other error is an
/// unknown outcome.
fn never_sent<T>(result: &Result<T, etcd_client::Error>) -> bool {
    let Err(e) = result else {
        return false;
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        cause = c.source();
    }
    // Not every link of tonic's chain exposes its source: fall back on the description.
    format!("{e:?}").contains("kind: ConnectionRefused")
}

fn header_revision(r: &etcd_client::PutResponse) -> Option<i64> {
    r.header().map(|h| h.revision())
}
