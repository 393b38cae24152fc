//! Host collector against fixture `/proc` and `/sys` trees, and once against the host's own.

#![allow(clippy::unwrap_used)] // a panic is how a test reports

mod fixtures;

use std::time::{Duration, Instant};

use fixtures::Tree;
use gridmon_collectors::host::HostCollector;
use gridmon_collectors::model::{DiskMetrics, HostMetrics, MemoryMetrics, NetMetrics};
use gridmon_collectors::{CollectError, Roots};

const STAT_1: &str = "\
cpu  100 0 100 700 50 0 0 50 0 0
cpu0 50 0 50 350 25 0 0 25 0 0
cpu1 50 0 50 350 25 0 0 25 0 0
intr 12345 0 0
ctxt 999
btime 1700000000
processes 100
";

/// 100 ticks later: user +30, nice +10, system +10, idle +30, iowait +5, irq +5, softirq +5,
/// steal +5. cpu0 spent its time half in user, half idle; cpu1 idle and in iowait; cpu2 came
/// online.
const STAT_2: &str = "\
cpu  130 10 110 730 55 5 5 55 0 0
cpu0 100 0 50 400 25 0 0 25 0 0
cpu1 50 0 50 430 45 0 0 25 0 0
cpu2 5 0 5 10 0 0 0 0 0 0
intr 12345 0 0
btime 1700000000
";

/// A tree with every file the host collector needs, no devices and no mounts.
fn tree() -> Tree {
    let t = Tree::new();
    t.write("proc/stat", STAT_1);
    t.write(
        "proc/meminfo",
        "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\n\
         Buffers:          100000 kB\nCached:          2000000 kB\nSwapTotal:       2000000 kB\n\
         SwapFree:         500000 kB\n",
    );
    t.write("proc/loadavg", "0.50 1.25 2.00 3/456 7890\n");
    t.write("proc/uptime", "12345.67 23456.78\n");
    t.write("proc/diskstats", "");
    t.write("proc/self/mounts", "");
    t.write("proc/net/dev", NET_HEADER);
    t
}

const NET_HEADER: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
";

#[test]
fn cpu_split_from_two_stat_snapshots() {
    let t = tree();
    let mut c = HostCollector::new(t.roots());
    let t0 = Instant::now();
    let first = c.sample_at(t0).unwrap();
    assert_eq!(first.cpu.total_pct, 0.0, "no interval yet");
    assert_eq!(first.cpu.per_core_pct, [0.0, 0.0]);
    assert_eq!(
        (first.cpu.load1, first.cpu.load5, first.cpu.load15),
        (0.5, 1.25, 2.0)
    );
    assert_eq!(first.uptime_s, 12345.67);

    t.write("proc/stat", STAT_2);
    let cpu = c.sample_at(t0 + Duration::from_secs(1)).unwrap().cpu;
    // Nice counts as user, irq and softirq as system; busy excludes idle and iowait.
    assert_eq!(cpu.user_pct, 40.0);
    assert_eq!(cpu.system_pct, 20.0);
    assert_eq!(cpu.iowait_pct, 5.0);
    assert_eq!(cpu.steal_pct, 5.0);
    assert_eq!(cpu.total_pct, 65.0);
    assert_eq!(cpu.per_core_pct, [50.0, 0.0, 0.0]);
}

#[test]
fn memory_from_meminfo() {
    let t = tree();
    let mut c = HostCollector::new(t.roots());
    let kib = 1024;
    assert_eq!(
        c.sample().unwrap().memory,
        MemoryMetrics {
            total_bytes: 16_000_000 * kib,
            used_bytes: 8_000_000 * kib,
            available_bytes: 8_000_000 * kib,
            swap_total_bytes: 2_000_000 * kib,
            swap_used_bytes: 1_500_000 * kib,
        }
    );

    // Kernels before 3.14: available is estimated as free + buffers + cached.
    t.write(
        "proc/meminfo",
        "MemTotal: 16000000 kB\nMemFree: 1000000 kB\nBuffers: 100000 kB\nCached: 2000000 kB\n",
    );
    let m = c.sample().unwrap().memory;
    assert_eq!(
        (m.available_bytes, m.used_bytes),
        (3_100_000 * kib, 12_900_000 * kib)
    );
    assert_eq!((m.swap_total_bytes, m.swap_used_bytes), (0, 0));
}

#[test]
fn disk_rates_without_partitions_loops_or_ramdisks() {
    let t = tree();
    for part in ["sda1", "nvme0n1p1"] {
        t.write(&format!("sys/class/block/{part}/partition"), "1\n");
    }
    for whole in ["sda", "nvme0n1", "dm-0", "md127", "zram0"] {
        t.mkdir(&format!("sys/class/block/{whole}"));
    }
    // Fields after the name: reads merged sectors ms writes merged sectors ms in-flight
    // io_ticks weighted, then the discard and flush columns of newer kernels.
    let stats = |sda: [u64; 5], md: u64| {
        let [r, rs, w, ws, ticks] = sda;
        format!(
            "   8       0 sda {r} 0 {rs} 0 {w} 0 {ws} 0 0 {ticks} 0 0 0 0 0 0 0\n\
             \x20  8       1 sda1 {r} 0 {rs} 0 {w} 0 {ws} 0 0 {ticks} 0\n\
             \x20259       0 nvme0n1 1 0 8 0 1 0 8 0 0 1 0\n\
             \x20259       1 nvme0n1p1 1 0 8 0 1 0 8 0 0 1 0\n\
             \x20  7       0 loop0 1 0 8 0 0 0 0 0 0 1 0\n\
             \x20  1       0 ram0 0 0 0 0 0 0 0 0 0 0 0\n\
             \x20253       0 dm-0 0 0 0 0 0 0 0 0 0 0 0\n\
             \x20  9     127 md127 0 0 0 0 0 0 0 0 0 {md} 0\n\
             \x20252       0 zram0 0 0 0 0 0 0 0 0 0 0 0\n\
             \x20  8      16 sdb 1 2\n"
        )
    };
    t.write("proc/diskstats", stats([100, 2000, 50, 1000, 500], 0));
    let mut c = HostCollector::new(t.roots());
    let t0 = Instant::now();
    let first = c.sample_at(t0).unwrap();
    let names: Vec<&str> = first.disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        ["sda", "nvme0n1", "dm-0", "md127", "zram0"],
        "short lines are skipped too"
    );
    assert!(first.disks.iter().all(|d| d
        == &DiskMetrics {
            name: d.name.clone(),
            ..DiskMetrics::default()
        }));

    t.write(
        "proc/diskstats",
        stats([300, 2000 + 4096, 70, 1000 + 1024, 1500], 5000),
    );
    let second = c.sample_at(t0 + Duration::from_secs(2)).unwrap();
    assert_eq!(
        second.disks[0],
        DiskMetrics {
            name: "sda".into(),
            read_ops_ps: 100.0,
            write_ops_ps: 10.0,
            read_bytes_ps: 4096.0 * 512.0 / 2.0,
            write_bytes_ps: 1024.0 * 512.0 / 2.0,
            busy_pct: 50.0,
        }
    );
    assert_eq!(
        second.disks[3].busy_pct, 100.0,
        "io_ticks beyond the interval are clamped"
    );
    assert_eq!(second.disks[1].read_ops_ps, 0.0);
}

#[test]
fn a_failed_sample_does_not_skew_later_rates() {
    let t = tree();
    t.mkdir("sys/class/block/sda");
    let reads = |n: u64| format!("   8       0 sda {n} 0 0 0 0 0 0 0 0 0 0\n");
    t.write("proc/diskstats", reads(100));
    let mut c = HostCollector::new(t.roots());
    let t0 = Instant::now();
    c.sample_at(t0).unwrap();

    // The disks are read, then the sample fails on a later file.
    t.write("proc/diskstats", reads(200));
    t.remove("proc/net/dev");
    t.mkdir("proc/net/dev");
    assert!(c.sample_at(t0 + Duration::from_secs(1)).is_err());

    t.remove("proc/net/dev");
    t.write("proc/net/dev", NET_HEADER);
    t.write("proc/diskstats", reads(300));
    let m = c.sample_at(t0 + Duration::from_secs(2)).unwrap();
    assert_eq!(
        m.disks[0].read_ops_ps, 100.0,
        "100 reads in the 1 s since they were last read"
    );
}

#[test]
fn net_counters_and_link_state() {
    let t = tree();
    let dev = |eth0: [u64; 4]| {
        let [rxb, rxp, txb, txp] = eth0;
        format!(
            "{NET_HEADER}    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0\n\
             \x20 eth0: {rxb} {rxp} 1 2 0 0 0 0 {txb} {txp} 3 4 0 0 0 0\n\
             \x20 eth1:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n\
             \x20 tun0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n\
             \x20wlan0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n\
             eth2:123456789012 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n"
        )
    };
    let link = |name: &str, operstate: &str, carrier: Option<&str>| {
        t.write(
            &format!("sys/class/net/{name}/operstate"),
            format!("{operstate}\n"),
        );
        if let Some(carrier) = carrier {
            t.write(
                &format!("sys/class/net/{name}/carrier"),
                format!("{carrier}\n"),
            );
        }
    };
    link("lo", "unknown", Some("1"));
    link("eth0", "up", Some("1"));
    // Administratively down: the kernel refuses to read `carrier` (EINVAL); here it is absent.
    link("eth1", "down", None);
    link("tun0", "unknown", Some("0"));
    link("wlan0", "dormant", Some("1"));
    // eth2 has no sysfs entry at all.

    t.write("proc/net/dev", dev([1000, 10, 5000, 50]));
    let mut c = HostCollector::new(t.roots());
    let t0 = Instant::now();
    let first = c.sample_at(t0).unwrap();
    let state: Vec<(&str, bool, bool)> = first
        .nets
        .iter()
        .map(|n| (n.name.as_str(), n.up, n.carrier))
        .collect();
    assert_eq!(
        state,
        [
            ("lo", true, true),
            ("eth0", true, true),
            ("eth1", false, false),
            ("tun0", false, false),
            ("wlan0", false, true),
            ("eth2", false, false),
        ]
    );
    assert!(first
        .nets
        .iter()
        .all(|n| n.rx_bytes_ps == 0.0 && n.tx_packets_ps == 0.0));

    t.write("proc/net/dev", dev([3000, 14, 6000, 60]));
    let second = c.sample_at(t0 + Duration::from_secs(2)).unwrap();
    assert_eq!(
        second.nets[1],
        NetMetrics {
            name: "eth0".into(),
            up: true,
            carrier: true,
            rx_bytes_ps: 1000.0,
            tx_bytes_ps: 500.0,
            rx_packets_ps: 2.0,
            tx_packets_ps: 5.0,
            ..NetMetrics::default()
        }
    );
}

#[test]
fn filesystems_backed_by_devices_once_each() {
    let t = tree();
    for dir in ["mnt/root", "mnt/bind", "mnt/with space"] {
        t.mkdir(dir);
    }
    let mnt = |rel: &str| t.path(rel).to_str().unwrap().replace(' ', "\\040");
    t.write(
        "proc/self/mounts",
        format!(
            "/dev/sda1 {root} ext4 rw,relatime 0 0\n\
             proc /proc proc rw 0 0\n\
             tmpfs /run tmpfs rw 0 0\n\
             overlay / overlay rw 0 0\n\
             /dev/loop0 /snap/core/1 squashfs ro 0 0\n\
             /dev/sda1 {bind} ext4 rw 0 0\n\
             tank/data {space} zfs rw 0 0\n\
             /dev/sdb1 {missing} xfs rw 0 0\n\
             server:/export {root} nfs4 rw 0 0\n\
             truncated-line\n",
            root = mnt("mnt/root"),
            bind = mnt("mnt/bind"),
            space = mnt("mnt/with space"),
            missing = mnt("mnt/missing"),
        ),
    );
    let mut c = HostCollector::new(t.roots());
    let fs = c.sample().unwrap().filesystems;
    let seen: Vec<(&str, &str, &str)> = fs
        .iter()
        .map(|f| (f.mount.as_str(), f.device.as_str(), f.fstype.as_str()))
        .collect();
    let root = t.path("mnt/root");
    let space = t.path("mnt/with space");
    assert_eq!(
        seen,
        [
            (root.to_str().unwrap(), "/dev/sda1", "ext4"),
            (space.to_str().unwrap(), "tank/data", "zfs")
        ]
    );
    for f in &fs {
        assert!(
            f.total_bytes > 0 && f.used_bytes + f.avail_bytes <= f.total_bytes,
            "{f:?}"
        );
        assert!(f.inodes_used <= f.inodes_total, "{f:?}");
    }
    assert_eq!(
        c.fs_failures_total(),
        1,
        "the missing mount point is counted"
    );
}

#[test]
fn required_files_missing_or_garbled_are_errors() {
    let t = tree();
    t.remove("proc/stat");
    let mut c = HostCollector::new(t.roots());
    assert!(matches!(c.sample(), Err(CollectError::Read { .. })));

    t.write("proc/stat", "intr 1 2 3\n");
    assert!(matches!(c.sample(), Err(CollectError::Parse { .. })));

    // The optional ones may be missing (some containers have no diskstats).
    t.write("proc/stat", STAT_1);
    for rel in ["proc/diskstats", "proc/net/dev", "proc/self/mounts"] {
        t.remove(rel);
    }
    let m = c.sample().unwrap();
    assert!(m.disks.is_empty() && m.nets.is_empty() && m.filesystems.is_empty());
}

#[test]
fn the_collector_can_move_to_a_blocking_task() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<HostCollector>();
}

#[test]
fn this_host() {
    let mut c = HostCollector::new(Roots::default());
    c.sample().unwrap();
    let m: HostMetrics = c.sample().unwrap();
    assert!(m.uptime_s > 0.0);
    assert!(
        m.memory.total_bytes > 0 && m.memory.used_bytes <= m.memory.total_bytes,
        "{:?}",
        m.memory
    );
    assert!(m.memory.available_bytes <= m.memory.total_bytes);
    assert!(!m.cpu.per_core_pct.is_empty());
    let cpu = &m.cpu;
    for pct in [
        cpu.total_pct,
        cpu.user_pct,
        cpu.system_pct,
        cpu.iowait_pct,
        cpu.steal_pct,
    ]
    .into_iter()
    .chain(cpu.per_core_pct.iter().copied())
    {
        assert!((0.0..=100.0).contains(&pct), "{cpu:?}");
    }
    assert!(
        m.nets.iter().any(|n| n.name == "lo" && n.up),
        "{:?}",
        m.nets
    );
    for d in &m.disks {
        assert!(
            d.read_ops_ps >= 0.0 && (0.0..=100.0).contains(&d.busy_pct),
            "{d:?}"
        );
    }
    for f in &m.filesystems {
        assert!(f.used_bytes <= f.total_bytes, "{f:?}");
    }
    assert!(m.probes.is_empty(), "probes are the probe collector's");
}
