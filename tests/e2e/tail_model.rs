//! A model-based property test of the log tailer, end to end: random
//! sequences of what happens to a log file and to the agent (lines, partial
//! lines, rotation by rename, copytruncate, delete and recreate, restart,
//! crash) are run against real files, a real `sidekick run` and a real
//! `sidekick receive`; what arrives is compared with a model of what was
//! written: every line at least once, and exactly once unless the agent was
//! killed with SIGKILL.
//!
//! Each case costs a second or two, so a CI run tries a few dozen
//! (`SIDEKICK_MODEL_CASES`, default 12: about 20 s); a failing case
//! shrinks to a short sequence of operations, printed with the failure.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError};
use sidekick_e2e::{line_for, seq_of, serial, Agent, AgentConfig, Receiver, Scratch, SeqReport};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LINE_LEN: usize = 80;

/// One step of a case.
#[derive(Debug, Clone)]
enum Op {
    /// Appends this many lines in one write.
    Write(u16),
    /// Appends the first half of a line, waits, then the rest.
    Partial { pause_ms: u16 },
    /// `app.log` → `app.log.N`, a new `app.log` (the agent has the old file
    /// open by then; its last lines are read through that descriptor).
    RotateRename,
    /// Copies `app.log` to `app.log.N` and truncates it, between two writes
    /// (lines the agent had not read yet are read from the copy).
    CopyTruncate,
    /// Deletes `app.log` (which the agent has open) and creates a new one.
    DeleteRecreate,
    /// SIGTERM, then a new agent with the same data_dir.
    Restart,
    /// SIGKILL, this many lines written while it is down, then a new agent.
    Crash { write_while_down: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u16..400).prop_map(Op::Write),
        2 => (0u16..400).prop_map(|pause_ms| Op::Partial { pause_ms }),
        2 => Just(Op::RotateRename),
        1 => Just(Op::CopyTruncate),
        1 => Just(Op::DeleteRecreate),
        1 => Just(Op::Restart),
        1 => (0u16..400).prop_map(|write_while_down| Op::Crash { write_while_down }),
    ]
}

/// The files, the writer's handle, the agent, and the model: every line
/// `0..next` was written and must arrive.
struct World {
    s: Scratch,
    receiver: Receiver,
    cfg: AgentConfig,
    app: PathBuf,
    file: File,
    agent: Agent,
    next: u64,
    rotations: u32,
    crashed: bool,
    /// A file was deleted since everything written last arrived.
    deleted_unshipped: bool,
    /// A file was copied and truncated since everything written last
    /// arrived.
    copied_unshipped: bool,
    /// The first line written to the current `app.log`.
    generation: u64,
    stderrs: Vec<String>,
}

fn open_append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn start_agent(cfg: &AgentConfig, dir: &Path) -> Agent {
    let agent = Agent::start(cfg, dir);
    // Started (its first scan done) before the case goes on: a SIGTERM in
    // the first milliseconds of the process, before it hooks signals, is
    // not what this test is about.
    agent.wait_for_stderr_line("the first scan", Duration::from_secs(20), |l| {
        l.contains("tailing")
    });
    agent
}

/// Whether the agent holds a descriptor on inode `(dev, ino)`.
fn holds_inode(pid: u32, dev: u64, ino: u64) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    dir.filter_map(Result::ok)
        .any(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino))
}

/// Polls `done` every 20 ms for at most `timeout`; whether it got there.
fn poll(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl World {
    fn new() -> Self {
        let s = Scratch::new();
        let receiver = Receiver::start();
        let app = s.log("app.log");
        let file = open_append(&app);
        // `app.log` only: rotated names match no glob.
        let mut cfg = AgentConfig::new(&s.data, &[&app], receiver.endpoint());
        cfg.scan_interval = "200ms";
        cfg.start_at = "beginning";
        cfg.batch_timeout = "100ms";
        cfg.max_records = 500;
        cfg.max_in_flight = 2;
        let agent = start_agent(&cfg, s.path());
        Self {
            s,
            receiver,
            cfg,
            app,
            file,
            agent,
            next: 0,
            rotations: 0,
            crashed: false,
            deleted_unshipped: false,
            copied_unshipped: false,
            generation: 0,
            stderrs: Vec::new(),
        }
    }

    fn write(&mut self, n: u64) {
        let mut buf = String::new();
        for seq in self.next..self.next + n {
            buf.push_str(&line_for(seq, "model", LINE_LEN));
            buf.push('\n');
        }
        self.file.write_all(buf.as_bytes()).expect("append");
        self.next += n;
    }

    /// Waits until the agent has the current `app.log` open and its
    /// checkpoint saved: only a file the agent has a checkpoint of can be
    /// found again after a crash once it is renamed out of the glob (the
    /// agent saves one right after opening a file, before reading it).
    fn wait_open(&self) -> Result<(), TestCaseError> {
        let md = std::fs::metadata(&self.app).expect("stat app.log");
        let pid = self.agent.pid();
        let key = format!("\"{}:{}\"", md.dev(), md.ino());
        let checkpoints = self.s.data.join("checkpoints.json");
        if poll(Duration::from_secs(5), || {
            holds_inode(pid, md.dev(), md.ino())
                && std::fs::read_to_string(&checkpoints).is_ok_and(|c| c.contains(&key))
        }) {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!(
                "the agent did not open app.log (inode {}) and save its checkpoint within 5 s",
                md.ino()
            )))
        }
    }

    /// Waits until a line of the current `app.log` arrived, if one was
    /// written: the agent has read some of it. A file truncated before the
    /// agent read any of it cannot be told from one that was always empty,
    /// and its lines are only in a copy no glob matches.
    fn wait_read_some(&mut self, why: &str) -> Result<(), TestCaseError> {
        let (from, to) = (self.generation, self.next);
        if from == to {
            return Ok(());
        }
        let receiver = &self.receiver;
        let some = || {
            receiver
                .logs()
                .iter()
                .any(|r| seq_of(&r.body).is_some_and(|q| (from..to).contains(&q)))
        };
        if poll(Duration::from_secs(10), some) {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!(
                "{why}: none of lines {from}..{to} arrived within 10 s"
            )))
        }
    }

    /// Waits until every line written so far arrived.
    fn wait_shipped(&mut self, why: &str) -> Result<(), TestCaseError> {
        let want = self.next;
        let receiver = &self.receiver;
        let all = || report_of(receiver, want).missing() == 0;
        if poll(Duration::from_secs(10), all) {
            self.deleted_unshipped = false;
            self.copied_unshipped = false;
            Ok(())
        } else {
            let report = report_of(receiver, want);
            Err(TestCaseError::fail(format!(
                "{why}: lines written so far did not all arrive within 10 s: {report}"
            )))
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Write(n) => self.write(u64::from(n)),
            Op::Partial { pause_ms } => {
                let line = line_for(self.next, "partial", LINE_LEN);
                let (a, b) = line.split_at(LINE_LEN / 2);
                self.file.write_all(a.as_bytes()).expect("append");
                std::thread::sleep(Duration::from_millis(u64::from(pause_ms)));
                self.file
                    .write_all(format!("{b}\n").as_bytes())
                    .expect("append");
                self.next += 1;
            }
            Op::RotateRename => {
                self.wait_open()?;
                self.rotations += 1;
                let to = self.s.log(&format!("app.log.{}", self.rotations));
                std::fs::rename(&self.app, to).expect("rename");
                self.file = open_append(&self.app);
                self.generation = self.next;
            }
            Op::CopyTruncate => {
                self.wait_read_some("before copytruncate")?;
                self.rotations += 1;
                let to = self.s.log(&format!("app.log.{}", self.rotations));
                std::fs::copy(&self.app, to).expect("copy");
                self.file.set_len(0).expect("truncate");
                self.copied_unshipped = true;
                self.generation = self.next;
            }
            Op::DeleteRecreate => {
                self.wait_open()?;
                std::fs::remove_file(&self.app).expect("delete");
                self.file = open_append(&self.app);
                self.deleted_unshipped = true;
                self.generation = self.next;
            }
            Op::Restart => {
                let status = self.agent.term(Duration::from_secs(15));
                prop_assert!(status.success(), "exit status after SIGTERM: {:?}", status);
                self.stderrs.push(self.agent.stderr());
                self.agent = start_agent(&self.cfg, self.s.path());
            }
            Op::Crash { write_while_down } => {
                if self.deleted_unshipped {
                    // What a deleted file held is gone with the agent's
                    // descriptor: no tailer can read it after a SIGKILL
                    // that came before it did.
                    self.wait_shipped("before a crash after a delete")?;
                }
                if self.copied_unshipped {
                    // A copytruncate the agent has not seen yet, and a
                    // checkpoint saved after the copy, before the SIGKILL:
                    // the restarted agent does not take that copy for the
                    // truncated file's (README, "Truncation").
                    self.wait_shipped("before a crash after a copytruncate")?;
                }
                self.agent.kill9();
                self.crashed = true;
                self.stderrs.push(self.agent.stderr());
                self.write(u64::from(write_while_down));
                self.agent = start_agent(&self.cfg, self.s.path());
            }
        }
        Ok(())
    }

    /// Everything written arrives; exactly once if no crash happened.
    fn check(&mut self) -> Result<(), TestCaseError> {
        let want = self.next;
        let receiver = &self.receiver;
        poll(Duration::from_secs(8), || {
            report_of(receiver, want).missing() == 0
        });
        let records = self
            .receiver
            .settle(Duration::from_millis(600), Duration::from_secs(10));
        let report = SeqReport::new(
            "app.log and its rotations",
            want,
            records.iter().map(|r| r.body.as_str()),
        );
        let context = || {
            format!(
                "{report}\ncrashed: {}\nstderr of the current agent:\n{}\nearlier agents:\n{}",
                self.crashed,
                last_lines(&self.agent.stderr(), 30),
                self.stderrs
                    .iter()
                    .map(|s| last_lines(s, 15))
                    .collect::<Vec<_>>()
                    .join("\n----\n")
            )
        };
        prop_assert!(
            report.missing() == 0 && report.foreign == 0,
            "lines lost or mangled: {}",
            context()
        );
        if !self.crashed {
            prop_assert!(
                report.duplicates() == 0,
                "lines sent twice with no crash: {}",
                context()
            );
        }
        Ok(())
    }
}

/// What arrived so far, against seq `0..want`.
fn report_of(receiver: &Receiver, want: u64) -> SeqReport {
    let logs = receiver.logs();
    SeqReport::new("app.log", want, logs.iter().map(|r| r.body.as_str()))
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn run_case(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut w = World::new();
    for op in ops {
        w.apply(op)?;
    }
    w.check()?;
    let status = w.agent.term(Duration::from_secs(15));
    prop_assert!(status.success(), "exit status after SIGTERM: {:?}", status);
    Ok(())
}

fn cases() -> u32 {
    std::env::var("SIDEKICK_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

proptest! {
    #![proptest_config(Config {
        cases: cases(),
        max_shrink_iters: 16,
        max_shrink_time: 60_000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    })]

    /// The tailer against the model, over random sequences of operations.
    #[test]
    fn the_tailer_delivers_what_the_model_says(ops in vec(op(), 1..8)) {
        let _serial = serial();
        eprintln!("case: {ops:?}");
        let started = Instant::now();
        let r = run_case(&ops);
        eprintln!("case done in {:?}: {}", started.elapsed(), if r.is_ok() { "ok" } else { "FAILED" });
        r?;
    }
}
