//! The two servers under comparison and the comparison itself: `Pair` starts the oracle (Debian's
//! etcd 3.4) and the subject (raftkine, or a second etcd when `CONFORMANCE_AGAINST=etcd`), runs
//! each operation on both at the same time, and reports the first divergence with the operation,
//! the few operations before it and both answers. With `CONFORMANCE_KEEP_GOING=1` scripted tests
//! collect every divergence and report them all at the end instead; `CONFORMANCE_TRACE=1` prints
//! every step with the oracle's answer.

use std::collections::VecDeque;
use std::fmt::Debug;

use etcd_client::Client;

use crate::answer::Answer;
use crate::ops::{execute, Op};
use crate::support::Server;

/// How many earlier operations a divergence report shows.
const HISTORY: usize = 6;

/// True when the suite checks itself: the subject is a second etcd.
pub fn self_check() -> bool {
    std::env::var("CONFORMANCE_AGAINST").as_deref() == Ok("etcd")
}

/// Starts the subject server: raftkine, or a second etcd in self-check mode.
pub fn start_subject() -> Server {
    if self_check() {
        Server::etcd()
    } else {
        Server::raftkine()
    }
}

/// Display name of the subject in reports.
pub fn subject_name() -> &'static str {
    if self_check() {
        "etcd #2 (self-check)"
    } else {
        "raftkine"
    }
}

/// Starts the oracle and the subject in parallel (etcd takes about a second to come up).
pub async fn start_servers() -> (Server, Server) {
    let oracle = tokio::task::spawn_blocking(Server::etcd);
    let subject = tokio::task::spawn_blocking(start_subject);
    (started(oracle.await), started(subject.await))
}

/// The started server, or the start's own panic (its whole message, with the server's log).
fn started(joined: Result<Server, tokio::task::JoinError>) -> Server {
    match joined {
        Ok(server) => server,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("starting a server: {e}"),
    }
}

pub struct Pair {
    pub oracle: Server,
    pub subject: Server,
    /// Client of the oracle.
    pub a: Client,
    /// Client of the subject.
    pub b: Client,
    test: String,
    /// Extra text for every report (the seed of a randomized run).
    pub context: String,
    step: usize,
    history: VecDeque<String>,
    failures: Vec<String>,
    keep_going: bool,
    trace: bool,
}

impl Pair {
    /// Starts both servers for the test named `test`.
    pub async fn start(test: &str) -> Pair {
        let (oracle, subject) = start_servers().await;
        let a = oracle.client().await;
        let b = subject.client().await;
        Pair {
            oracle,
            subject,
            a,
            b,
            test: test.to_string(),
            context: String::new(),
            step: 0,
            history: VecDeque::new(),
            failures: Vec::new(),
            keep_going: std::env::var("CONFORMANCE_KEEP_GOING").as_deref() == Ok("1"),
            trace: std::env::var("CONFORMANCE_TRACE").as_deref() == Ok("1"),
        }
    }

    /// Index the next operation gets in reports.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Stops after the first divergence even in keep-going mode (randomized runs: everything
    /// after it would only repeat it).
    pub fn stop_at_first_divergence(&mut self) {
        self.keep_going = false;
    }

    /// Runs `op` on both servers concurrently, compares the answers and returns the oracle's.
    pub async fn run(&mut self, op: impl Into<Op>) -> Answer {
        let op = op.into();
        let (a, mut b) = tokio::join!(execute(&mut self.a, &op), execute(&mut self.b, &op));
        if sabotage_step() == Some(self.step) {
            b = sabotage(b);
        }
        self.check(&op.to_string(), &a, &b);
        a
    }

    /// Runs `op` and returns the oracle's header revision (panics if the oracle failed it).
    pub async fn rev(&mut self, op: impl Into<Op>) -> i64 {
        let op = op.into();
        let text = op.to_string();
        let answer = self.run(op).await;
        answer.revision().unwrap_or_else(|| {
            let tail = self.oracle.log_tail(30);
            panic!("oracle failed `{text}`: {answer:?}\n--- oracle log tail ---\n{tail}")
        })
    }

    /// The current revision (an empty-key range on both servers, compared like any operation).
    pub async fn current_revision(&mut self) -> i64 {
        self.rev(crate::ops::get("\0").limit(1)).await
    }

    /// Compares two normalised values of the step described by `what`.
    pub fn check<T: Debug + PartialEq>(&mut self, what: &str, oracle: &T, subject: &T) {
        let index = self.step;
        self.step += 1;
        if self.trace {
            println!("[{}] #{index}: {what}\n    -> {oracle:?}", self.test);
        }
        if oracle != subject {
            let report = self.report(index, what, oracle, subject);
            self.fail(report);
        }
        self.history.push_back(format!("#{index}: {what}"));
        if self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }

    /// Compares two lists (watch transcripts); a mismatch is reported by its first differing
    /// item, with the item before it, instead of both whole lists.
    pub fn check_list<T: Debug + PartialEq>(&mut self, what: &str, oracle: &[T], subject: &[T]) {
        let Some(i) =
            (0..oracle.len().max(subject.len())).find(|&i| oracle.get(i) != subject.get(i))
        else {
            return self.check(what, &(), &());
        };
        let before = i.checked_sub(1).and_then(|j| oracle.get(j));
        let what = format!(
            "{what}\n({} items from the oracle, {} from the subject; first difference at item #{i}; \
             item #{} on both: {before:?})",
            oracle.len(),
            subject.len(),
            i as i64 - 1
        );
        self.check(&what, &oracle.get(i), &subject.get(i));
    }

    /// Records a divergence that is not an answer mismatch (e.g. a watch that never delivered).
    pub fn fail(&mut self, report: String) {
        if self.keep_going {
            eprintln!("{report}");
            self.failures.push(report);
        } else {
            panic!("{report}\n{}", self.subject_log_tail());
        }
    }

    fn report<T: Debug>(&self, index: usize, what: &str, oracle: &T, subject: &T) -> String {
        let mut s = format!("\n=== conformance divergence in `{}`", self.test);
        if !self.context.is_empty() {
            s.push_str(&format!(" ({})", self.context));
        }
        s.push_str(&format!("\noperation #{index}: {what}\n"));
        if !self.history.is_empty() {
            s.push_str("after:\n");
            for h in &self.history {
                s.push_str(&format!("    {h}\n"));
            }
        }
        s.push_str(&format!("etcd 3.4 (oracle): {oracle:?}\n"));
        s.push_str(&format!("{}: {subject:?}\n", subject_name()));
        s.push_str(&first_difference(oracle, subject));
        s
    }

    fn subject_log_tail(&self) -> String {
        let tail = self.subject.log_tail(20);
        format!("--- last lines of {}'s log ---\n{tail}", subject_name())
    }

    /// Ends the test: panics with every divergence collected in keep-going mode.
    pub fn finish(self) {
        if !self.failures.is_empty() {
            panic!(
                "{} divergence(s) in `{}`:\n{}\n{}",
                self.failures.len(),
                self.test,
                self.failures.join("\n"),
                self.subject_log_tail()
            );
        }
    }
}

/// `CONFORMANCE_SABOTAGE=<step>`: the subject's answer at that step is altered, to see that the
/// comparison fails and what its report looks like.
fn sabotage_step() -> Option<usize> {
    std::env::var("CONFORMANCE_SABOTAGE").ok()?.parse().ok()
}

fn sabotage(answer: Answer) -> Answer {
    match answer {
        Answer::Range {
            rev,
            mut kvs,
            more,
            count,
        } => {
            if let Some(kv) = kvs.first_mut() {
                kv.version += 1;
            }
            Answer::Range {
                rev,
                kvs,
                more: !more,
                count,
            }
        }
        Answer::Put { rev, prev_kv } => Answer::Put {
            rev: rev.map(|r| r + 1),
            prev_kv,
        },
        other => Answer::Error {
            code: "Sabotaged".into(),
            message: format!("was {other:?}"),
        },
    }
}

/// The first line where the pretty-printed forms differ, to find the field quickly.
pub fn first_difference<T: Debug>(oracle: &T, subject: &T) -> String {
    let a = format!("{oracle:#?}");
    let b = format!("{subject:#?}");
    let (al, bl): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    for i in 0..al.len().max(bl.len()) {
        let x = al.get(i).copied().unwrap_or("<end>");
        let y = bl.get(i).copied().unwrap_or("<end>");
        if x != y {
            let context = al[..i.min(al.len())]
                .iter()
                .rev()
                .take(3)
                .rev()
                .map(|l| format!("      {l}\n"))
                .collect::<String>();
            return format!(
                "first difference at line {} of the pretty form:\n{context}  oracle:  {}\n  subject: {}\n",
                i + 1,
                x.trim(),
                y.trim()
            );
        }
    }
    String::new()
}
