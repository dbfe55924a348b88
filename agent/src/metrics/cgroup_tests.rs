//! cgroup parsers on real file contents: v1 captured from a hybrid host
//! (kernel 6.18, cgroup v1 controllers + an empty unified hierarchy), v2 in
//! the formats of the kernel's cgroup-v2 documentation.

use super::*;
use proptest::prelude::*;
use std::time::Duration;

// ---- captured on a cgroup v1 (hybrid) host ----
const V1_PROC_CGROUP: &str = "9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/bc5f3a102211ee4645c632d2b2f10b10
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

const V1_MOUNTINFO: &str = "24 1 253:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

const V1_MEMORY_STAT: &str = "cache 1126400
rss 1736704
rss_huge 0
shmem 0
mapped_file 0
dirty 53248
writeback 0
workingset_refault_anon 0
workingset_refault_file 73
swap 0
swapcached 0
pgpgin 20799
pgpgout 20100
pgfault 45585
pgmajfault 7
inactive_anon 1638400
active_anon 12288
inactive_file 827392
active_file 299008
unevictable 0
hierarchical_memory_limit 9223372036854771712
hierarchical_memsw_limit 9223372036854771712
total_cache 1126400
total_rss 1736704
total_rss_huge 0
total_shmem 0
total_mapped_file 0
total_dirty 53248
total_writeback 0
total_workingset_refault_anon 0
total_workingset_refault_file 73
total_swap 0
total_swapcached 0
total_pgpgin 20799
total_pgpgout 20100
total_pgfault 45585
total_pgmajfault 7
total_inactive_anon 1638400
total_active_anon 12288
total_inactive_file 827392
total_active_file 299008
total_unevictable 0
";
const V1_OOM_CONTROL: &str = "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n";
const V1_LIMIT_UNLIMITED: &str = "9223372036854771712\n";
const V1_CPU_STAT: &str =
    "nr_periods 0\nnr_throttled 0\nthrottled_time 0\nnr_bursts 0\nburst_time 0\n";
const V1_CPUACCT_USAGE: &str = "1823311893359\n";
const V1_CFS_QUOTA: &str = "-1\n";
const V1_CFS_PERIOD: &str = "100000\n";
const V1_BLKIO_EMPTY: &str = "Total 0\n";
// The layout of a v1 blkio file with devices (from the kernel's blkio docs).
const V1_BLKIO: &str = "8:16 Read 4096
8:16 Write 122880
8:16 Sync 126976
8:16 Async 0
8:16 Total 126976
8:0 Read 1000
8:0 Write 24
8:0 Total 1024
Total 127000
";
// Unified hierarchy of the same hybrid host (no controllers enabled).
const HYBRID_V2_CPU_STAT: &str =
    "usage_usec 1766748652\nuser_usec 1602235996\nsystem_usec 164512655\nnice_usec 100693475\n";
const HOST_CPU_PRESSURE: &str = "some avg10=94.85 avg60=81.37 avg300=36.63 total=282638128
full avg10=0.00 avg60=0.00 avg300=0.00 total=0
";

// ---- cgroup v2, formats of Documentation/admin-guide/cgroup-v2.rst ----
const V2_PROC_CGROUP: &str = "0::/kubepods.slice/kubepods-burstable.slice/cri-containerd-4f2c8a3c1b9d0e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f.scope\n";
const V2_MOUNTINFO: &str =
    "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
const V2_CPU_STAT: &str = "usage_usec 2500000
user_usec 2000000
system_usec 500000
core_sched.force_idle_usec 0
nr_periods 100
nr_throttled 7
throttled_usec 350000
nr_bursts 0
burst_usec 0
";
const V2_CPU_MAX: &str = "150000 100000\n";
const V2_MEMORY_STAT: &str = "anon 52428800
file 1048576
kernel 327680
kernel_stack 16384
pagetables 131072
sock 0
shmem 0
file_mapped 0
file_dirty 0
file_writeback 0
anon_thp 0
inactive_anon 52400000
active_anon 28800
inactive_file 1048576
active_file 0
pgfault 13000
pgmajfault 0
";
const V2_MEMORY_EVENTS: &str = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
const V2_IO_STAT: &str = "8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0
8:0 rbytes=90430464 wbytes=299008000 rios=8950 wios=1252 dbytes=50331648 dios=3021
";
const V2_PRESSURE: &str = "some avg10=1.50 avg60=0.80 avg300=0.20 total=12345678
full avg10=0.25 avg60=0.10 avg300=0.00 total=2345678
";

fn all_exist(_: &Path) -> bool {
    true
}

#[test]
fn v1_hybrid_host_resolves_each_controller_to_its_hierarchy() {
    let f = CgroupFiles::resolve(V1_PROC_CGROUP, V1_MOUNTINFO, &all_exist);
    assert_eq!(
        f.memory,
        Some(Dir::V1(PathBuf::from(
            "/sys/fs/cgroup/memory/process_api/bc5f3a102211ee4645c632d2b2f10b10"
        )))
    );
    assert_eq!(f.cpu, Some(Dir::V1(PathBuf::from("/sys/fs/cgroup/cpu"))));
    assert_eq!(
        f.cpuacct,
        Some(Dir::V1(PathBuf::from("/sys/fs/cgroup/cpuacct")))
    );
    assert_eq!(f.pids, Some(Dir::V1(PathBuf::from("/sys/fs/cgroup/pids"))));
    assert_eq!(f.io, Some(Dir::V1(PathBuf::from("/sys/fs/cgroup/blkio"))));
    assert_eq!(f.psi, Some(PathBuf::from("/sys/fs/cgroup/unified")));
    assert_eq!(f.path, "/");
}

#[test]
fn v2_host_reads_everything_from_the_unified_cgroup() {
    let f = CgroupFiles::resolve(V2_PROC_CGROUP, V2_MOUNTINFO, &all_exist);
    let dir = PathBuf::from("/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/cri-containerd-4f2c8a3c1b9d0e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f.scope");
    assert_eq!(f.memory, Some(Dir::V2(dir.clone())));
    assert_eq!(f.cpu, Some(Dir::V2(dir.clone())));
    assert_eq!(f.io, Some(Dir::V2(dir.clone())));
    assert_eq!(f.psi, Some(dir));
    assert_eq!(
        container_id(&f.path).as_deref(),
        Some("4f2c8a3c1b9d0e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f")
    );
}

#[test]
fn a_cgroup_namespace_showing_root_is_the_mount_itself_and_outside_paths_are_refused() {
    let f = CgroupFiles::resolve("0::/\n", V2_MOUNTINFO, &all_exist);
    assert_eq!(f.memory, Some(Dir::V2(PathBuf::from("/sys/fs/cgroup"))));
    // Another container's cgroup seen from inside our namespace.
    let f = CgroupFiles::resolve("0::/../other.scope\n", V2_MOUNTINFO, &all_exist);
    assert_eq!(f.memory, None);
    // docker without a cgroup namespace: the mount shows /docker/<id> as its root.
    let mi = "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
    let f = CgroupFiles::resolve("4:memory:/docker/abc\n", mi, &all_exist);
    assert_eq!(
        f.memory,
        Some(Dir::V1(PathBuf::from("/sys/fs/cgroup/memory")))
    );
    // A missing directory gives no files rather than a wrong guess.
    let f = CgroupFiles::resolve(V2_PROC_CGROUP, V2_MOUNTINFO, &|_: &Path| false);
    assert!(!f.any());
}

#[test]
fn v1_files_parse() {
    assert_eq!(keyed(V1_MEMORY_STAT, "total_rss"), Some(1736704));
    assert_eq!(keyed(V1_MEMORY_STAT, "total_cache"), Some(1126400));
    assert_eq!(keyed(V1_MEMORY_STAT, "rss"), Some(1736704));
    assert_eq!(keyed(V1_OOM_CONTROL, "oom_kill"), Some(0));
    assert_eq!(parse_limit(V1_LIMIT_UNLIMITED), None);
    assert_eq!(parse_limit("52428800\n"), Some(52428800));
    assert_eq!(keyed(V1_CPU_STAT, "throttled_time"), Some(0));
    assert_eq!(parse_u64(V1_CPUACCT_USAGE), Some(1823311893359));
    assert_eq!(parse_cfs_limit(V1_CFS_QUOTA, V1_CFS_PERIOD), None);
    assert_eq!(parse_cfs_limit("50000", V1_CFS_PERIOD), Some(0.5));
    assert_eq!(parse_blkio(V1_BLKIO_EMPTY), (0, 0));
    assert_eq!(parse_blkio(V1_BLKIO), (5096, 122904));
    assert_eq!(
        CpuStatV2::parse(HYBRID_V2_CPU_STAT).usage_usec,
        Some(1766748652)
    );
    let p = parse_pressure(HOST_CPU_PRESSURE);
    assert_eq!(
        p.some,
        Some(PsiLine {
            avg10: 94.85,
            total_us: 282638128
        })
    );
    assert_eq!(
        p.full,
        Some(PsiLine {
            avg10: 0.0,
            total_us: 0
        })
    );
}

#[test]
fn v2_files_parse() {
    let c = CpuStatV2::parse(V2_CPU_STAT);
    assert_eq!(
        c,
        CpuStatV2 {
            usage_usec: Some(2500000),
            user_usec: Some(2000000),
            system_usec: Some(500000),
            nr_throttled: Some(7),
            throttled_usec: Some(350000),
        }
    );
    assert_eq!(parse_cpu_max(V2_CPU_MAX), Some(1.5));
    assert_eq!(parse_cpu_max("max 100000\n"), None);
    assert_eq!(parse_limit("max\n"), None);
    assert_eq!(keyed(V2_MEMORY_STAT, "anon"), Some(52428800));
    assert_eq!(keyed(V2_MEMORY_STAT, "file"), Some(1048576));
    assert_eq!(keyed(V2_MEMORY_EVENTS, "oom"), Some(2));
    assert_eq!(keyed(V2_MEMORY_EVENTS, "oom_kill"), Some(1));
    assert_eq!(
        parse_io_stat(V2_IO_STAT),
        IoTotals {
            rbytes: 1459200 + 90430464,
            wbytes: 314773504 + 299008000,
            rios: 192 + 8950,
            wios: 353 + 1252,
        }
    );
    let p = parse_pressure(V2_PRESSURE);
    assert_eq!(p.some.map(|l| l.total_us), Some(12345678));
    assert_eq!(p.full.map(|l| l.avg10), Some(0.25));
}

#[test]
fn sample_reads_a_v2_cgroup_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, content) in [
        ("cpu.stat", V2_CPU_STAT),
        ("cpu.max", V2_CPU_MAX),
        ("memory.current", "53477376\n"),
        ("memory.max", "max\n"),
        ("memory.high", "104857600\n"),
        ("memory.stat", V2_MEMORY_STAT),
        ("memory.events", V2_MEMORY_EVENTS),
        ("pids.current", "3\n"),
        ("pids.max", "max\n"),
        ("io.stat", V2_IO_STAT),
        ("cpu.pressure", V2_PRESSURE),
        ("memory.pressure", V2_PRESSURE),
    ] {
        std::fs::write(d.join(name), content).unwrap();
    }
    let mi = format!("30 24 0:26 / {} rw - cgroup2 cgroup2 rw\n", d.display());
    let f = CgroupFiles::resolve("0::/\n", &mi, &|p: &Path| p.is_dir());
    assert_eq!(f.oom_kill_count(), Some(1));
    let mut out = Vec::new();
    CgroupReader::new(&f).sample(&Clock { now: 2_000 }, 1_000, &mut out);
    let get = |name: &str| out.iter().find(|p| p.name == name).map(|p| p.value);
    assert_eq!(get("cgroup.cpu.usage"), Some(MetricValue::Double(2.5)));
    assert_eq!(
        get("cgroup.cpu.throttled.time"),
        Some(MetricValue::Double(0.35))
    );
    assert_eq!(get("cgroup.cpu.limit"), Some(MetricValue::Double(1.5)));
    assert_eq!(get("cgroup.memory.usage"), Some(MetricValue::Int(53477376)));
    assert_eq!(get("cgroup.memory.limit"), None, "max means no limit");
    assert_eq!(get("cgroup.memory.high"), Some(MetricValue::Int(104857600)));
    assert_eq!(
        get("cgroup.memory.oom_kill.count"),
        Some(MetricValue::Int(1))
    );
    assert_eq!(get("cgroup.pids.current"), Some(MetricValue::Int(3)));
    assert_eq!(
        get("cgroup.pressure.memory.full.avg10"),
        Some(MetricValue::Double(0.25))
    );
    assert_eq!(
        get("cgroup.pressure.io.some.total"),
        None,
        "no io.pressure file"
    );
    let usage = out.iter().find(|p| p.name == "cgroup.cpu.usage").unwrap();
    assert_eq!(
        (usage.unit.as_ref(), usage.start_time_unix_nano),
        ("s", 1_000)
    );
    assert_eq!(usage.kind, MetricKind::Sum { monotonic: true });
    let mem = out
        .iter()
        .find(|p| p.name == "cgroup.memory.usage")
        .unwrap();
    assert_eq!(
        (mem.unit.as_ref(), mem.kind, mem.start_time_unix_nano),
        ("By", MetricKind::Gauge, 0)
    );
}

#[test]
fn mountinfo_escapes_are_decoded() {
    let mi = "41 31 0:38 / /sys/fs/cgroup/my\\040cg rw - cgroup2 cgroup2 rw\n";
    assert_eq!(
        parse_mountinfo(mi)[0].mount_point,
        PathBuf::from("/sys/fs/cgroup/my cg")
    );
}

#[test]
fn container_ids_are_found_in_the_usual_layouts() {
    let id = "4f2c8a3c1b9d0e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f";
    for path in [
        format!("/docker/{id}"),
        format!("/system.slice/docker-{id}.scope"),
        format!("/kubepods/besteffort/pod1234/crio-{id}.scope"),
    ] {
        assert_eq!(container_id(&path).as_deref(), Some(id), "{path}");
    }
    assert_eq!(
        container_id("/process_api/bc5f3a102211ee4645c632d2b2f10b10"),
        None
    );
    assert_eq!(
        container_id(&format!("/x/{id}0")),
        None,
        "65 hex digits is not an id"
    );
}

proptest! {
    #[test]
    fn parsers_never_panic(s in "\\PC*") {
        let _ = parse_proc_cgroup(&s);
        let _ = parse_mountinfo(&s);
        let _ = parse_u64(&s);
        let _ = parse_limit(&s);
        let _ = keyed(&s, "oom_kill");
        let _ = CpuStatV2::parse(&s);
        let _ = parse_cpu_max(&s);
        let _ = parse_cfs_limit(&s, &s);
        let _ = parse_io_stat(&s);
        let _ = parse_blkio(&s);
        let _ = parse_pressure(&s);
        let _ = container_id(&s);
        let _ = CgroupFiles::resolve(&s, &s, &all_exist);
    }

    #[test]
    fn line_shaped_garbage_never_panics(
        lines in proptest::collection::vec("[0-9a-z:=/ .\\\\-]{0,40}", 0..12)
    ) {
        let s = lines.join("\n");
        let _ = parse_proc_cgroup(&s);
        let _ = parse_mountinfo(&s);
        let _ = parse_io_stat(&s);
        let _ = parse_blkio(&s);
        let _ = parse_pressure(&s);
        let _ = CgroupFiles::resolve(&s, V1_MOUNTINFO, &all_exist);
        let _ = CgroupFiles::resolve(V1_PROC_CGROUP, &s, &all_exist);
    }
}

#[test]
fn a_v1_hierarchy_is_read_through_kept_files_that_follow_changes() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let memdir = "memory/process_api/bc5f3a102211ee4645c632d2b2f10b10";
    for d in ["cpu", "cpuacct", memdir, "pids", "blkio", "unified"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    // 400 devices: a file of ~10 KiB, bigger than one read's first buffer.
    let mut blkio = String::new();
    for i in 0..400 {
        blkio.push_str(&format!("8:{i} Read 10\n8:{i} Write 1\n8:{i} Total 11\n"));
    }
    blkio.push_str("Total 4400\n");
    assert!(blkio.len() > 8192);
    let write = |name: &str, content: &str| std::fs::write(r.join(name), content).unwrap();
    write("cpuacct/cpuacct.usage", V1_CPUACCT_USAGE);
    write("cpuacct/cpuacct.usage_user", "1000000000\n");
    write("cpuacct/cpuacct.usage_sys", "500000000\n");
    write(
        "cpu/cpu.stat",
        "nr_periods 10\nnr_throttled 3\nthrottled_time 2000000000\n",
    );
    write("cpu/cpu.cfs_quota_us", "50000\n");
    write("cpu/cpu.cfs_period_us", V1_CFS_PERIOD);
    write(&format!("{memdir}/memory.usage_in_bytes"), "2863104\n");
    write(
        &format!("{memdir}/memory.limit_in_bytes"),
        V1_LIMIT_UNLIMITED,
    );
    write(&format!("{memdir}/memory.stat"), V1_MEMORY_STAT);
    write(&format!("{memdir}/memory.oom_control"), V1_OOM_CONTROL);
    write("pids/pids.max", "max\n");
    write("blkio/blkio.throttle.io_service_bytes_recursive", &blkio);
    write("blkio/blkio.throttle.io_serviced_recursive", V1_BLKIO);
    write("unified/cpu.pressure", HOST_CPU_PRESSURE);
    let mi: String = V1_MOUNTINFO
        .lines()
        .map(|l| l.replace(" /sys/fs/cgroup/", &format!(" {}/", r.display())))
        .map(|l| l + "\n")
        .collect();
    let f = CgroupFiles::resolve(V1_PROC_CGROUP, &mi, &|p: &Path| p.is_dir());
    let mut reader = CgroupReader::new(&f);
    let sample = |reader: &mut CgroupReader| {
        let mut out = Vec::new();
        reader.sample(&Clock { now: 2_000 }, 1_000, &mut out);
        out
    };
    let get =
        |out: &[MetricPoint], name: &str| out.iter().find(|p| p.name == name).map(|p| p.value);
    let out = sample(&mut reader);
    assert_eq!(
        get(&out, "cgroup.cpu.usage"),
        Some(MetricValue::Double(1823.311893359))
    );
    assert_eq!(get(&out, "cgroup.cpu.user"), Some(MetricValue::Double(1.0)));
    assert_eq!(
        get(&out, "cgroup.cpu.system"),
        Some(MetricValue::Double(0.5))
    );
    assert_eq!(
        get(&out, "cgroup.cpu.throttled.periods"),
        Some(MetricValue::Int(3))
    );
    assert_eq!(
        get(&out, "cgroup.cpu.throttled.time"),
        Some(MetricValue::Double(2.0))
    );
    assert_eq!(
        get(&out, "cgroup.cpu.limit"),
        Some(MetricValue::Double(0.5))
    );
    assert_eq!(
        get(&out, "cgroup.memory.usage"),
        Some(MetricValue::Int(2863104))
    );
    assert_eq!(get(&out, "cgroup.memory.limit"), None, "unlimited");
    assert_eq!(
        get(&out, "cgroup.memory.anon"),
        Some(MetricValue::Int(1736704))
    );
    assert_eq!(
        get(&out, "cgroup.memory.file"),
        Some(MetricValue::Int(1126400))
    );
    assert_eq!(
        get(&out, "cgroup.memory.oom_kill.count"),
        Some(MetricValue::Int(0))
    );
    assert_eq!(get(&out, "cgroup.pids.current"), None, "no file yet");
    let io = |out: &[MetricPoint], name: &str, dir: &str| {
        out.iter()
            .find(|p| {
                p.name == name
                    && p.attributes.iter().any(|a| {
                        a.value == sidekick_pipeline::AttrValue::Str(dir.to_string().into())
                    })
            })
            .map(|p| p.value)
    };
    assert_eq!(
        io(&out, "cgroup.io.bytes", "read"),
        Some(MetricValue::Int(4000)),
        "all 400 devices summed"
    );
    assert_eq!(
        io(&out, "cgroup.io.bytes", "write"),
        Some(MetricValue::Int(400))
    );
    assert_eq!(
        io(&out, "cgroup.io.operations", "write"),
        Some(MetricValue::Int(122904))
    );
    assert_eq!(
        get(&out, "cgroup.pressure.cpu.some.avg10"),
        Some(MetricValue::Double(94.85))
    );

    // The kept files show what the files say now: a changed figure (the
    // file rewritten in place, as the kernel regenerates its files), a file
    // that appeared since (looked for again after RETRY_OPEN).
    write("cpuacct/cpuacct.usage", "2000000000000\n");
    write("pids/pids.current", "7\n");
    let out = sample(&mut reader);
    assert_eq!(
        get(&out, "cgroup.cpu.usage"),
        Some(MetricValue::Double(2000.0))
    );
    std::thread::sleep(crate::metrics::kept::RETRY_OPEN + Duration::from_millis(100));
    let out = sample(&mut reader);
    assert_eq!(
        get(&out, "cgroup.cpu.usage"),
        Some(MetricValue::Double(2000.0))
    );
    assert_eq!(get(&out, "cgroup.pids.current"), Some(MetricValue::Int(7)));
    assert_eq!(
        io(&out, "cgroup.io.bytes", "read"),
        Some(MetricValue::Int(4000))
    );
}
