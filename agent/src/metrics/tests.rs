//! The sampler against real child processes.

use super::*;
use sidekick_pipeline::AttrValue;
use std::process::{Child, Command, Stdio};

/// A child that holds ~50 MiB (touched, so resident), burns CPU for
/// `burn_s` seconds, then sleeps.
fn hog(burn_s: f64) -> Child {
    let script = format!(
        "import time\nb = b'x' * (50 << 20)\nt = time.time()\nwhile time.time() - t < {burn_s}: pass\ntime.sleep(60)\n"
    );
    Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .expect("python3 is needed for this test")
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// utime+stime in seconds and VmRSS in bytes, as a user would read them.
fn proc_truth(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    let ticks: u64 = rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    (ticks as f64 / ticks_per_second(), kb * 1024)
}

fn value(points: &[MetricPoint], name: &str, attr: Option<(&str, &str)>) -> Option<f64> {
    points
        .iter()
        .find(|p| {
            p.name == name
                && attr.is_none_or(|(k, v)| {
                    p.attributes
                        .iter()
                        .any(|a| a.key == k && a.value == AttrValue::Str(v.to_string().into()))
                })
        })
        .map(|p| match p.value {
            MetricValue::Int(i) => i as f64,
            MetricValue::Double(d) => d,
        })
}

fn cfg() -> SamplerConfig {
    SamplerConfig {
        interval: Duration::from_millis(100),
        process: true,
        include_children: false,
        cgroup: true,
        host: false,
    }
}

#[test]
fn cpu_time_and_rss_agree_with_proc_read_at_the_same_moment() {
    let child = Killed(hog(1.0));
    let pid = child.0.id();
    let mut s = Sampler::new(cfg());
    // Wait until the allocation is resident and some CPU has burned.
    let t0 = Instant::now();
    while proc_truth(pid).1 < 50 << 20 && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        // Bracket the sample between two readings: the process is burning
        // CPU, so the sampled time must fall between them (± one tick).
        let (cpu_before, rss_before) = proc_truth(pid);
        let points = s.sample(Some(pid));
        let (cpu_after, rss_after) = proc_truth(pid);
        let user = value(&points, "process.cpu.time", Some(("cpu.mode", "user"))).unwrap();
        let system = value(&points, "process.cpu.time", Some(("cpu.mode", "system"))).unwrap();
        let tick = 1.0 / ticks_per_second();
        assert!(
            cpu_before - tick <= user + system && user + system <= cpu_after + tick,
            "cpu {} not within [{cpu_before}, {cpu_after}] ± {tick}",
            user + system
        );
        let rss = value(&points, "process.memory.usage", None).unwrap() as u64;
        let (lo, hi) = (rss_before.min(rss_after), rss_before.max(rss_after));
        // Tolerance: 1 MiB (statm-derived RSS vs status's VmRSS, both in pages).
        assert!(
            rss + (1 << 20) >= lo && rss <= hi + (1 << 20),
            "rss {rss} not within [{lo}, {hi}] ± 1 MiB"
        );
        assert!(rss >= 50 << 20, "the child holds 50 MiB, rss {rss}");
        std::thread::sleep(Duration::from_millis(150));
    }
    // The second sample on has a utilization: the child spins on one core.
    let points = s.sample(Some(pid));
    let util = value(&points, "process.cpu.utilization", None)
        .expect("utilization after the first sample");
    assert!((0.0..=1.5).contains(&util), "utilization {util}");
    for name in [
        "process.memory.virtual",
        "process.thread.count",
        "process.unix.file_descriptor.count",
        "process.context_switches",
        "process.paging.faults",
        "process.uptime",
        "process.disk.io",
    ] {
        assert!(value(&points, name, None).is_some(), "{name} missing");
    }
    let cpu = points
        .iter()
        .find(|p| p.name == "process.cpu.time")
        .unwrap();
    assert_eq!(cpu.kind, MetricKind::Sum { monotonic: true });
    assert_eq!(cpu.unit, "s");
    let started = cpu.start_time_unix_nano;
    let now = sidekick_pipeline::now_unix_nano();
    assert!(
        started < now && now - started < 60_000_000_000,
        "start time is the process's"
    );
}

#[test]
fn include_children_sums_over_descendants() {
    // sh waits on two sleeping python children holding 50 MiB each.
    let script = "python3 -c \"import time; b=b'x'*(50<<20); time.sleep(60)\" & \
                  python3 -c \"import time; b=b'x'*(50<<20); time.sleep(60)\" & wait";
    let child = Killed(Command::new("sh").args(["-c", script]).spawn().unwrap());
    let pid = child.0.id();
    let t0 = Instant::now();
    let mut with = Sampler::new(SamplerConfig {
        include_children: true,
        ..cfg()
    });
    let mut without = Sampler::new(cfg());
    loop {
        let total = value(&with.sample(Some(pid)), "process.memory.usage", None).unwrap_or(0.0);
        if total >= f64::from(100u32 << 20) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "children never reached 100 MiB: {total}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let alone = value(&without.sample(Some(pid)), "process.memory.usage", None).unwrap();
    assert!(alone < f64::from(20u32 << 20), "sh alone is small: {alone}");
    let _ = Command::new("pkill")
        .args(["-P", &pid.to_string()])
        .status();
}

#[test]
fn a_gone_process_gives_no_process_figures() {
    let mut s = Sampler::new(cfg());
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    assert!(s
        .sample(Some(pid))
        .iter()
        .all(|p| !p.name.starts_with("process.")));
    assert!(s.sample(None).is_empty());
}

#[test]
fn host_figures_when_asked() {
    let mut s = Sampler::new(SamplerConfig {
        host: true,
        ..cfg()
    });
    let _ = s.sample(None);
    std::thread::sleep(Duration::from_millis(100));
    let points = s.sample(None);
    for name in [
        "system.cpu.utilization",
        "system.memory.usage",
        "system.cpu.load_average.1m",
        "system.cpu.load_average.15m",
        "system.network.io",
    ] {
        assert!(value(&points, name, None).is_some(), "{name} missing");
    }
    let used = value(
        &points,
        "system.memory.usage",
        Some(("system.memory.state", "used")),
    )
    .unwrap();
    assert!(used > 0.0);
}

#[test]
fn spawn_sampler_samples_on_its_interval_and_once_more_on_stop() {
    let child = Killed(Command::new("sleep").arg("30").spawn().unwrap());
    let pid = Arc::new(AtomicU32::new(child.0.id()));
    let (tx, rx) = crossbeam_channel::bounded(64);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
    let crash = Arc::new(CrashContext::new(10));
    let h = spawn_sampler(cfg(), pid, tx, crash.clone(), stop_rx).unwrap();
    std::thread::sleep(Duration::from_millis(350));
    let t = Instant::now();
    drop(stop_tx);
    h.join().unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "stop wakes the sampler"
    );
    let chunks: Vec<Chunk> = rx.try_iter().collect();
    // At 0, 100, 200, 300 ms and the final one: 4 or 5 (timing), never a burst.
    assert!((4..=6).contains(&chunks.len()), "{} samples", chunks.len());
    assert!(crash.last_sample().contains("process.memory.usage="));
}

#[test]
fn stat_io_and_status_parse_as_procfs_and_proc_say() {
    // A sleeping child: its figures hold still between the two readings.
    let child = Killed(Command::new("sleep").arg("30").spawn().unwrap());
    let pid = child.0.id();
    std::thread::sleep(Duration::from_millis(100));
    let p = procfs::process::Process::new(pid as i32).unwrap();
    let stat = std::fs::read(format!("/proc/{pid}/stat")).unwrap();
    let ours = process::parse_stat_fields(&stat).unwrap();
    let theirs = p.stat().unwrap();
    assert_eq!(
        (ours.utime, ours.stime, ours.cutime, ours.cstime),
        (theirs.utime, theirs.stime, theirs.cutime, theirs.cstime)
    );
    assert_eq!(
        (ours.minflt, ours.cminflt, ours.majflt, ours.cmajflt),
        (theirs.minflt, theirs.cminflt, theirs.majflt, theirs.cmajflt)
    );
    assert_eq!(
        (ours.num_threads, ours.starttime, ours.vsize, ours.rss),
        (
            theirs.num_threads as u64,
            theirs.starttime,
            theirs.vsize,
            theirs.rss
        )
    );
    let io = std::fs::read(format!("/proc/{pid}/io")).unwrap();
    let theirs = p.io().unwrap();
    assert_eq!(
        process::parse_io(&io),
        (Some(theirs.read_bytes), Some(theirs.write_bytes))
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = |k: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().parse().unwrap())
    };
    assert_eq!(
        process::parse_ctxt_switches(status.as_bytes()),
        (
            line("voluntary_ctxt_switches:"),
            line("nonvoluntary_ctxt_switches:")
        )
    );
    // A command name with spaces, parentheses and non-UTF-8 bytes.
    let mut odd =
        b"42 (a) b\xff) (c) S 1 42 42 0 -1 4194304 7 8 9 10 11 12 -13 14 20 0 3 0 99 4096 5"
            .to_vec();
    odd.extend_from_slice(b" 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n");
    let f = process::parse_stat_fields(&odd).unwrap();
    assert_eq!(
        (f.minflt, f.cminflt, f.majflt, f.cmajflt, f.utime, f.stime),
        (7, 8, 9, 10, 11, 12)
    );
    assert_eq!(
        (
            f.cutime,
            f.cstime,
            f.num_threads,
            f.starttime,
            f.vsize,
            f.rss
        ),
        (-13, 14, 3, 99, 4096, 5)
    );
    assert_eq!(process::parse_stat_fields(b"42 (a) S 1 2 3"), None);
}

#[test]
fn a_target_that_exits_and_restarts_under_a_new_pid_is_followed() {
    let mut s = Sampler::new(cfg());
    let first = Killed(Command::new("sleep").arg("30").spawn().unwrap());
    let a = first.0.id();
    let points = s.sample(Some(a));
    let small = value(&points, "process.memory.usage", None).expect("figures of the first");
    let start_a = points[0].start_time_unix_nano;
    assert!(small < f64::from(20u32 << 20), "sleep is small: {small}");
    // Its files stay open between samples; once it is reaped they tell so.
    drop(first);
    let points = s.sample(Some(a));
    assert!(
        points.iter().all(|p| !p.name.starts_with("process.")),
        "a gone target has no process figures: {:?}",
        points.iter().map(|p| &p.name).collect::<Vec<_>>()
    );
    // The restarted target (new PID) holds 50 MiB: its own files are read.
    // (Started a few clock ticks later, so its start time differs.)
    std::thread::sleep(Duration::from_millis(50));
    let second = Killed(hog(0.0));
    let b = second.0.id();
    let t0 = Instant::now();
    loop {
        let points = s.sample(Some(b));
        let rss = value(&points, "process.memory.usage", None).unwrap_or(0.0);
        if rss >= f64::from(50u32 << 20) {
            let start_b = points[0].start_time_unix_nano;
            assert!(start_b > start_a, "start time is the new process's");
            assert!(value(&points, "process.unix.file_descriptor.count", None).is_some());
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "new target never showed 50 MiB: {rss}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The cost of one sample, through the production path ([`Sampler::sample`]):
/// (a) process only, (b) cgroup only, (c) both, as the sampler thread takes
/// them every interval. The target is a live child burning ~10 % of a core
/// (its CPU time, context switches and cgroup figures change between
/// samples), in the cgroup this test runs in. 20 rounds of 100 samples per
/// mode, the modes interleaved round by round so machine noise hits them
/// alike; prints the median and p90 of the 2,000 single-sample times.
///
/// `cargo test --release -p sidekick sample_cost -- --ignored --nocapture`
/// (SAMPLE_COST_ROUNDS=N for more or fewer rounds).
#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn sample_cost() {
    let script = "import time\nwhile True:\n    t = time.time()\n    while time.time() - t < 0.001: pass\n    time.sleep(0.009)\n";
    let child = Killed(
        Command::new("python3")
            .args(["-c", script])
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 is needed for this benchmark"),
    );
    let pid = child.0.id();
    let rounds: usize = std::env::var("SAMPLE_COST_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let per_round = 100;
    let modes = [
        ("process only", true, false),
        ("cgroup only", false, true),
        ("process + cgroup", true, true),
    ];
    let mut samplers: Vec<Sampler> = modes
        .iter()
        .map(|&(_, process, cgroup)| {
            Sampler::new(SamplerConfig {
                process,
                cgroup,
                ..cfg()
            })
        })
        .collect();
    let mut points = vec![0; modes.len()];
    for (s, n) in samplers.iter_mut().zip(points.iter_mut()) {
        for _ in 0..50 {
            *n = s.sample(Some(pid)).len();
        }
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds * per_round); modes.len()];
    for _ in 0..rounds {
        for (s, t) in samplers.iter_mut().zip(times.iter_mut()) {
            for _ in 0..per_round {
                let at = Instant::now();
                let p = s.sample(Some(pid));
                t.push(at.elapsed().as_secs_f64() * 1e6);
                drop(p);
            }
        }
    }
    for (((name, _, _), t), n) in modes.iter().zip(times.iter_mut()).zip(&points) {
        t.sort_by(f64::total_cmp);
        let q = |f: f64| t[((t.len() - 1) as f64 * f) as usize];
        println!(
            "sample_cost {name:<17} {n:>2} points: median {:>6.1} µs  p90 {:>6.1} µs  (n = {})",
            q(0.5),
            q(0.9),
            t.len()
        );
    }
}
