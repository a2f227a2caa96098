//! `--stats-json FILE`: a server's counters as one flat JSON object,
//! rewritten every second while it runs (replaced whole, so a reader never
//! sees half of it) and once more with the final counters at exit.
//!
//! With `--queues N` each queue's thread posts its figures to a shared
//! [`Board`] once a second and queue 0's thread writes the file: the
//! top-level fields are the totals over every queue (so a reader of one
//! queue's file reads a two-queue file the same way), then `"queues": N`
//! and, with more than one, `"per_queue"`: the same fields for each queue,
//! in queue order.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use zcstack::{Stack, StackStats};
use zcstack_driver::Driver;

use crate::queues::{Board, total};

/// How often the file is rewritten while the server runs.
pub const EVERY: Duration = Duration::from_secs(1);

/// A server's own counters (requests, connections, …) beside the stack's.
pub trait AppCounters: Clone + Default + Send {
    /// Adds another queue's counters to these (for the totals).
    fn add(&mut self, other: &Self);
    /// The JSON fields, `"name":value,…` without braces, of these counters
    /// and the stack's `s`.
    fn fields(&self, s: &StackStats) -> String;
}

/// The JSON object for every queue's `(counters, stack counters)`: the
/// totals, `"queues"`, and with several queues `"per_queue"`.
pub fn render<A: AppCounters>(all: &[(A, StackStats)]) -> String {
    let mut app = A::default();
    for (a, _) in all {
        app.add(a);
    }
    let t = total(all.iter().map(|(_, s)| s));
    let mut json = format!("{{{},\"queues\":{}", app.fields(&t), all.len());
    if all.len() > 1 {
        let each: Vec<String> = all
            .iter()
            .enumerate()
            .map(|(q, (a, s))| format!("{{\"queue\":{q},{}}}", a.fields(s)))
            .collect();
        json.push_str(&format!(",\"per_queue\":[{}]", each.join(",")));
    }
    json.push_str("}\n");
    json
}

/// Replaces `path` with `json` whole: writes a temporary file beside it,
/// then renames it over (a reader sees the old or the new counters).
pub fn write(path: &Path, json: &str) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(json.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing --stats-json {}", path.display()))
}

/// The `--stats-json` file of a server with `n` queues (nothing if no
/// path was given). Clone it into each queue's thread and make that
/// queue's [`JsonTicker`] with [`ticker`](Self::ticker).
pub struct StatsJson<A> {
    path: Option<Arc<PathBuf>>,
    /// Each queue's latest figures; `None` until it has posted.
    board: Board<Option<(A, StackStats)>>,
}

impl<A> Clone for StatsJson<A> {
    fn clone(&self) -> Self {
        StatsJson {
            path: self.path.clone(),
            board: self.board.clone(),
        }
    }
}

impl<A: AppCounters> StatsJson<A> {
    /// The file at `path` (if any) for `n` queues.
    pub fn new(path: Option<PathBuf>, n: usize) -> StatsJson<A> {
        StatsJson {
            path: path.map(Arc::new),
            board: Board::new(n),
        }
    }

    /// Queue `q`'s part: posts its figures every second; queue 0's writes.
    pub fn ticker(&self, q: usize) -> JsonTicker<A> {
        JsonTicker {
            out: self.clone(),
            queue: q,
            last: None,
            failed: false,
        }
    }

    /// Writes the final counters of every queue (after the stacks stopped).
    pub fn write_final(&self, all: &[(A, StackStats)]) -> anyhow::Result<()> {
        match &self.path {
            Some(path) => write(path, &render(all)),
            None => Ok(()),
        }
    }
}

/// One queue's `--stats-json` clock (see [`StatsJson`]).
pub struct JsonTicker<A> {
    out: StatsJson<A>,
    queue: usize,
    last: Option<Instant>,
    /// Writing failed once: said once, tried again every second.
    failed: bool,
}

impl<A: AppCounters> JsonTicker<A> {
    /// Call once per loop iteration, after polling: once a second posts
    /// this queue's counters (`app()` and the stack's) and, on queue 0,
    /// rewrites the file. Uses the time of the stack's last poll. A file
    /// that cannot be written is reported once on stderr as `app: …;
    /// serving goes on`, and tried again each second.
    pub fn tick<D: Driver>(&mut self, app: &str, stack: &Stack<D>, counters: impl FnOnce() -> A) {
        let Some(path) = &self.out.path else {
            return;
        };
        let now = stack.poll_time();
        if self.last.is_some_and(|t| now.duration_since(t) < EVERY) {
            return;
        }
        self.last = Some(now);
        let json = self
            .out
            .board
            .post(self.queue, Some((counters(), stack.stats())), |all| {
                // Queue 0 writes, once every queue has posted: a file
                // with some queues' figures would pass for all of them.
                if self.queue != 0 {
                    return None;
                }
                let all: Option<Vec<(A, StackStats)>> = all.iter().cloned().collect();
                all.map(|all| render(&all))
            });
        if let Some(json) = json {
            match write(path, &json) {
                Ok(()) => self.failed = false,
                Err(e) => {
                    if !self.failed {
                        eprintln!("{app}: {e:#}; serving goes on");
                    }
                    self.failed = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Hits(u64);

    impl AppCounters for Hits {
        fn add(&mut self, other: &Self) {
            self.0 += other.0;
        }
        fn fields(&self, s: &StackStats) -> String {
            format!(
                "\"hits\":{},\"rx_packets\":{},\"pool_in_use\":{}",
                self.0, s.driver.rx_packets, s.pool.in_use
            )
        }
    }

    fn stats(rx: u64, in_use: usize) -> StackStats {
        let mut s = StackStats::default();
        s.driver.rx_packets = rx;
        s.pool.in_use = in_use;
        s
    }

    #[test]
    fn one_queue_is_flat() {
        assert_eq!(
            render(&[(Hits(3), stats(10, 2))]),
            "{\"hits\":3,\"rx_packets\":10,\"pool_in_use\":2,\"queues\":1}\n"
        );
    }

    #[test]
    fn several_queues_give_totals_then_each() {
        assert_eq!(
            render(&[(Hits(3), stats(10, 0)), (Hits(4), stats(5, 1))]),
            concat!(
                "{\"hits\":7,\"rx_packets\":15,\"pool_in_use\":1,\"queues\":2,\"per_queue\":[",
                "{\"queue\":0,\"hits\":3,\"rx_packets\":10,\"pool_in_use\":0},",
                "{\"queue\":1,\"hits\":4,\"rx_packets\":5,\"pool_in_use\":1}]}\n"
            )
        );
    }
}
