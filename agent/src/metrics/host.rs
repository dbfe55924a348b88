//! Host figures (`metrics.host: true`) through `sysinfo`: CPU utilization,
//! memory, load averages, filesystem usage and network bytes.
//!
//! `system.memory.usage` splits the total in two so the states add up to it:
//! `used` = total - available, `free` = available (reclaimable cache counts
//! as free, as `free -h`'s "available" column does).

use super::{point, Clock};
use sidekick_pipeline::{Attr, MetricKind, MetricPoint, MetricValue};
use sysinfo::{Disks, Networks, System};

/// Keeps sysinfo's state between samples (CPU utilization is a delta).
pub(crate) struct HostSampler {
    system: System,
    disks: Disks,
    networks: Networks,
    /// When this sampler started: the start of the network sums.
    start: u64,
    first: bool,
}

impl HostSampler {
    pub fn new() -> Self {
        let mut system = System::new();
        system.refresh_cpu_usage();
        HostSampler {
            system,
            disks: Disks::new_with_refreshed_list(),
            networks: Networks::new_with_refreshed_list(),
            start: sidekick_pipeline::now_unix_nano(),
            first: true,
        }
    }

    pub fn sample(&mut self, clock: &Clock, out: &mut Vec<MetricPoint>) {
        let now = clock.now;
        let gauge = |name: &'static str, unit: &'static str, v: MetricValue, attrs: Vec<Attr>| {
            point(name, unit, MetricKind::Gauge, v, now, 0, attrs)
        };
        let int = |v: u64| MetricValue::Int(i64::try_from(v).unwrap_or(i64::MAX));

        self.system.refresh_cpu_usage();
        // The first figure covers no interval: skip it rather than report 0.
        if !self.first {
            let u = f64::from(self.system.global_cpu_usage()) / 100.0;
            out.push(gauge(
                "system.cpu.utilization",
                "1",
                MetricValue::Double(u),
                Vec::new(),
            ));
        }
        self.system.refresh_memory();
        let total = self.system.total_memory();
        let avail = self.system.available_memory().min(total);
        for (state, v) in [("used", total - avail), ("free", avail)] {
            out.push(gauge(
                "system.memory.usage",
                "By",
                int(v),
                vec![Attr::new("system.memory.state", state)],
            ));
        }
        let load = System::load_average();
        for (name, v) in [
            ("system.cpu.load_average.1m", load.one),
            ("system.cpu.load_average.5m", load.five),
            ("system.cpu.load_average.15m", load.fifteen),
        ] {
            out.push(gauge(
                name,
                "{run_queue_item}",
                MetricValue::Double(v),
                Vec::new(),
            ));
        }

        self.disks.refresh(true);
        for d in self.disks.list() {
            let (total, avail) = (d.total_space(), d.available_space().min(d.total_space()));
            let base = [
                Attr::new("system.device", d.name().to_string_lossy().into_owned()),
                Attr::new(
                    "system.filesystem.mountpoint",
                    d.mount_point().to_string_lossy().into_owned(),
                ),
                Attr::new(
                    "system.filesystem.type",
                    d.file_system().to_string_lossy().into_owned(),
                ),
            ];
            for (state, v) in [("used", total - avail), ("free", avail)] {
                let mut attrs = base.to_vec();
                attrs.push(Attr::new("system.filesystem.state", state));
                out.push(gauge("system.filesystem.usage", "By", int(v), attrs));
            }
        }

        self.networks.refresh(true);
        for (name, data) in self.networks.list() {
            // Totals since the interface came up (the kernel's counters).
            let (rx, tx) = (data.total_received(), data.total_transmitted());
            for (dir, v) in [("receive", rx), ("transmit", tx)] {
                out.push(point(
                    "system.network.io",
                    "By",
                    MetricKind::Sum { monotonic: true },
                    int(v),
                    now,
                    self.start,
                    vec![
                        Attr::new("network.interface.name", name.clone()),
                        Attr::new("network.io.direction", dir),
                    ],
                ));
            }
        }
        self.first = false;
    }
}
