//! Host-wide metrics from `/proc` and `/sys`: CPU time split, load, memory, disk I/O,
//! filesystem usage, network counters and link state.
//!
//! Counters are turned into rates against the previous sample; the state kept for that is a few
//! numbers per CPU, disk and interface, dropped when the device disappears.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::model::{CpuMetrics, DiskMetrics, FsMetrics, HostMetrics, MemoryMetrics, NetMetrics};
use crate::procfs::{self, fields, keyed_u64, lines, parse_f64, parse_u64, PathBuffer, ReadBuf};
use crate::{CollectError, Roots};

/// Filesystem types never reported, even when the "device" looks like a path: kernel and memory
/// filesystems, union mounts (their space belongs to the layers below), and read-only images
/// (squashfs snaps are always 100% full and would only raise false disk-full alarms).
const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "tmpfs",
    "ramfs",
    "cgroup",
    "cgroup2",
    "overlay",
    "aufs",
    "squashfs",
    "autofs",
    "nsfs",
    "bpf",
    "tracefs",
    "debugfs",
    "securityfs",
    "pstore",
    "efivarfs",
    "configfs",
    "fusectl",
    "mqueue",
    "hugetlbfs",
    "binfmt_misc",
];

/// Local filesystems whose device is not a path (ZFS names datasets `pool/fs`).
///
/// Network filesystems (nfs, cifs, ceph, …) are left out on purpose: `statvfs` on a mount whose
/// server is unreachable blocks uninterruptibly, which would stall every later sample, and
/// their capacity is the file server's to report.
const DEVICELESS_LOCAL_FS: &[&str] = &["zfs", "bcachefs"];

/// See [`DEVICELESS_LOCAL_FS`]; CIFS devices (`//server/share`) look like paths.
const NETWORK_FS: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "glusterfs",
    "9p",
    "afs",
    "lustre",
];

/// Reads host-wide metrics; keep one per host and call [`HostCollector::sample`] once per
/// interval.
#[derive(Debug)]
pub struct HostCollector {
    roots: Roots,
    /// Reused for every file of a sample.
    buf: ReadBuf,
    /// For the small sysfs files read while `buf` holds the file being walked.
    small: ReadBuf,
    path: PathBuffer,
    /// Bumped every sample; per-device state not seen in the current sample is dropped.
    generation: u64,
    cpu_total: Option<CpuTimes>,
    /// Indexed by core number; `None` for a core that was offline in the last sample.
    cpu_cores: Vec<Option<CpuTimes>>,
    disks: HashMap<String, DiskState>,
    nets: HashMap<String, NetState>,
    fs_failures_total: u64,
}

impl HostCollector {
    pub fn new(roots: Roots) -> Self {
        Self {
            roots,
            buf: ReadBuf::default(),
            small: ReadBuf::default(),
            path: PathBuffer::default(),
            generation: 0,
            cpu_total: None,
            cpu_cores: Vec::new(),
            disks: HashMap::new(),
            nets: HashMap::new(),
            fs_failures_total: 0,
        }
    }

    /// Reads /proc/stat, /proc/meminfo, /proc/loadavg, /proc/uptime, /proc/diskstats,
    /// /proc/self/mounts (+ statvfs per mount), /proc/net/dev and
    /// /sys/class/net/<if>/{operstate,carrier}.
    ///
    /// Rates are computed against the previous call (monotonic clock); the first call gives 0
    /// rates. `probes` is left empty for the probe collector to fill.
    pub fn sample(&mut self) -> Result<HostMetrics, CollectError> {
        self.sample_at(Instant::now())
    }

    /// [`HostCollector::sample`] with the caller's reading of the monotonic clock, so that
    /// several collectors can share one timestamp (and tests can choose the interval).
    pub fn sample_at(&mut self, now: Instant) -> Result<HostMetrics, CollectError> {
        self.generation += 1;

        let metrics = HostMetrics {
            uptime_s: self.uptime()?,
            cpu: self.cpu()?,
            memory: self.memory()?,
            disks: self.disks(now)?,
            filesystems: self.filesystems()?,
            nets: self.nets(now)?,
            probes: Vec::new(),
        };
        Ok(metrics)
    }

    /// Mounts skipped since start because `statvfs` failed on them (a stale mount, a mount
    /// point the agent may not enter).
    pub fn fs_failures_total(&self) -> u64 {
        self.fs_failures_total
    }

    /// Reads `<proc>/<rel>` into `self.buf`.
    fn read_proc(&mut self, rel: &str) -> Result<PathBuf, CollectError> {
        let path = self.roots.proc.join(rel);
        self.buf.read(&path).map_err(|source| CollectError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// Like [`Self::read_proc`], but a missing file (some containers have no
    /// `/proc/diskstats`) reads as empty.
    fn read_proc_optional(&mut self, rel: &str) -> Result<(), CollectError> {
        match self.read_proc(rel) {
            // A failed read leaves the buffer empty.
            Err(CollectError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(())
            }
            other => other.map(drop),
        }
    }

    fn uptime(&mut self) -> Result<f64, CollectError> {
        let path = self.read_proc("uptime")?;
        fields(self.buf.bytes())
            .next()
            .and_then(parse_f64)
            .ok_or_else(|| CollectError::Parse {
                path,
                what: "no uptime figure".into(),
            })
    }

    fn cpu(&mut self) -> Result<CpuMetrics, CollectError> {
        let path = self.read_proc("stat")?;
        let mut cpu = CpuMetrics::default();
        let mut seen_total = false;
        let mut cores_now: Vec<Option<CpuTimes>> = Vec::with_capacity(self.cpu_cores.len());
        for line in lines(self.buf.bytes()) {
            let Some(rest) = line.strip_prefix(b"cpu") else {
                // The cpu lines come first; everything after them is of no interest here.
                if seen_total {
                    break;
                }
                continue;
            };
            let mut f = fields(rest);
            let Some(label) = (if rest.first() == Some(&b' ') {
                Some(&b""[..])
            } else {
                f.next()
            }) else {
                continue;
            };
            let Some(times) = CpuTimes::parse(f) else {
                continue;
            };
            if label.is_empty() {
                seen_total = true;
                if let Some(prev) = &self.cpu_total {
                    let s = times.split_since(prev);
                    cpu.total_pct = s.busy;
                    cpu.user_pct = s.user;
                    cpu.system_pct = s.system;
                    cpu.iowait_pct = s.iowait;
                    cpu.steal_pct = s.steal;
                }
                self.cpu_total = Some(times);
            } else if let Some(core) = parse_u64(label).and_then(|n| usize::try_from(n).ok()) {
                // A core number far beyond any real machine means a garbled line, not a core.
                if core >= 1 << 16 {
                    continue;
                }
                if cores_now.len() <= core {
                    cores_now.resize(core + 1, None);
                }
                cores_now[core] = Some(times);
            }
        }
        if !seen_total {
            return Err(CollectError::Parse {
                path,
                what: "no aggregate `cpu` line".into(),
            });
        }
        // Offline cores have no line: they report 0 and restart from scratch when back.
        cpu.per_core_pct = cores_now
            .iter()
            .enumerate()
            .map(
                |(i, now)| match (now, self.cpu_cores.get(i).copied().flatten()) {
                    (Some(now), Some(prev)) => now.split_since(&prev).busy,
                    _ => 0.0,
                },
            )
            .collect();
        self.cpu_cores = cores_now;

        let path = self.read_proc("loadavg")?;
        let mut f = fields(self.buf.bytes()).map(parse_f64);
        match (f.next().flatten(), f.next().flatten(), f.next().flatten()) {
            (Some(l1), Some(l5), Some(l15)) => {
                cpu.load1 = l1 as f32;
                cpu.load5 = l5 as f32;
                cpu.load15 = l15 as f32;
            }
            _ => {
                return Err(CollectError::Parse {
                    path,
                    what: "expected three load averages".into(),
                })
            }
        }
        Ok(cpu)
    }

    fn memory(&mut self) -> Result<MemoryMetrics, CollectError> {
        let path = self.read_proc("meminfo")?;
        let (mut total, mut available, mut free, mut buffers, mut cached) = (None, None, 0, 0, 0);
        let (mut swap_total, mut swap_free) = (0, 0);
        for line in lines(self.buf.bytes()) {
            let kib = |key: &[u8]| keyed_u64(line, key);
            if let Some(v) = kib(b"MemTotal:") {
                total = Some(v);
            } else if let Some(v) = kib(b"MemAvailable:") {
                available = Some(v);
            } else if let Some(v) = kib(b"MemFree:") {
                free = v;
            } else if let Some(v) = kib(b"Buffers:") {
                buffers = v;
            } else if let Some(v) = kib(b"Cached:") {
                cached = v;
            } else if let Some(v) = kib(b"SwapTotal:") {
                swap_total = v;
            } else if let Some(v) = kib(b"SwapFree:") {
                swap_free = v;
            }
        }
        let total = total.ok_or_else(|| CollectError::Parse {
            path,
            what: "no MemTotal".into(),
        })?;
        // Kernels before 3.14 lack MemAvailable; free + buffers + cache is the old estimate.
        let available = available.unwrap_or(free + buffers + cached).min(total);
        let kib = |v: u64| v.saturating_mul(1024);
        Ok(MemoryMetrics {
            total_bytes: kib(total),
            used_bytes: kib(total - available),
            available_bytes: kib(available),
            swap_total_bytes: kib(swap_total),
            swap_used_bytes: kib(swap_total.saturating_sub(swap_free)),
        })
    }

    fn disks(&mut self, now_at: Instant) -> Result<Vec<DiskMetrics>, CollectError> {
        self.read_proc_optional("diskstats")?;
        let generation = self.generation;
        let mut out = Vec::new();
        for line in lines(self.buf.bytes()) {
            // major minor name, then the counters (Documentation/admin-guide/iostats.rst).
            let mut f = fields(line).skip(2);
            let Some(name) = f.next().and_then(|n| std::str::from_utf8(n).ok()) else {
                continue;
            };
            let mut c = [0u64; 10];
            if !fill(&mut c, f) {
                continue;
            }
            let now = DiskCounters {
                reads: c[0],
                read_sectors: c[2],
                writes: c[4],
                write_sectors: c[6],
                io_ticks_ms: c[9],
            };
            if !self.disks.contains_key(name) {
                let whole = is_whole_disk(&self.roots.sys, name, &mut self.path);
                self.disks.insert(
                    name.to_owned(),
                    DiskState {
                        whole,
                        counters: None,
                        generation,
                    },
                );
            }
            let Some(state) = self.disks.get_mut(name) else {
                continue;
            };
            state.generation = generation;
            let prev = state.counters.replace((now, now_at));
            if !state.whole {
                continue;
            }
            let mut disk = DiskMetrics {
                name: name.to_owned(),
                ..DiskMetrics::default()
            };
            if let Some((prev, elapsed_s)) =
                prev.and_then(|(c, at)| Some((c, elapsed(at, now_at)?)))
            {
                let rate = |now: u64, prev: u64| now.saturating_sub(prev) as f64 / elapsed_s;
                disk.read_ops_ps = rate(now.reads, prev.reads);
                disk.write_ops_ps = rate(now.writes, prev.writes);
                // diskstats counts 512-byte sectors whatever the device's sector size.
                disk.read_bytes_ps = rate(now.read_sectors, prev.read_sectors) * 512.0;
                disk.write_bytes_ps = rate(now.write_sectors, prev.write_sectors) * 512.0;
                let busy_ms = now.io_ticks_ms.saturating_sub(prev.io_ticks_ms) as f64;
                disk.busy_pct = (busy_ms / (elapsed_s * 1000.0) * 100.0).clamp(0.0, 100.0) as f32;
            }
            out.push(disk);
        }
        self.disks.retain(|_, s| s.generation == generation);
        Ok(out)
    }

    fn filesystems(&mut self) -> Result<Vec<FsMetrics>, CollectError> {
        self.read_proc_optional("self/mounts")?;
        let mut out: Vec<FsMetrics> = Vec::new();
        for line in lines(self.buf.bytes()) {
            let mut f = fields(line);
            let (Some(device), Some(mount), Some(fstype)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let Ok(fstype) = std::str::from_utf8(fstype) else {
                continue;
            };
            if !is_device_backed(device, fstype) {
                continue;
            }
            let device = unescape_mount_field(device);
            // A device mounted twice (bind mounts, btrfs subvolumes) is one filesystem; the
            // first mount listed is the original one.
            if out.iter().any(|fs| fs.device == device) {
                continue;
            }
            let mount = unescape_mount_field(mount);
            let usage = match procfs::statvfs(Path::new(&mount)) {
                Ok(usage) => usage,
                Err(err) => {
                    if self.fs_failures_total == 0 {
                        tracing::warn!(%mount, %device, %err, "statvfs failed; mount skipped (logged once, counted in fs_failures_total)");
                    }
                    self.fs_failures_total += 1;
                    continue;
                }
            };
            out.push(FsMetrics {
                mount,
                device,
                fstype: fstype.to_owned(),
                total_bytes: usage.total_bytes,
                used_bytes: usage.total_bytes.saturating_sub(usage.free_bytes),
                avail_bytes: usage.avail_bytes,
                inodes_total: usage.inodes_total,
                inodes_used: usage.inodes_total.saturating_sub(usage.inodes_free),
            });
        }
        Ok(out)
    }

    fn nets(&mut self, now_at: Instant) -> Result<Vec<NetMetrics>, CollectError> {
        self.read_proc_optional("net/dev")?;
        let generation = self.generation;
        let mut out = Vec::new();
        for line in lines(self.buf.bytes()) {
            // `  eth0: 123 …`; large counters can leave no space after the colon.
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let Some(name) = std::str::from_utf8(&line[..colon]).ok().map(str::trim) else {
                continue;
            };
            let mut c = [0u64; 12];
            if name.is_empty() || !fill(&mut c, fields(&line[colon + 1..])) {
                continue;
            }
            let now = NetCounters {
                rx_bytes: c[0],
                rx_packets: c[1],
                rx_errors: c[2],
                rx_dropped: c[3],
                tx_bytes: c[8],
                tx_packets: c[9],
                tx_errors: c[10],
                tx_dropped: c[11],
            };
            let (up, carrier) = link_state(&self.roots.sys, name, &mut self.path, &mut self.small);
            let mut net = NetMetrics {
                name: name.to_owned(),
                up,
                carrier,
                ..NetMetrics::default()
            };

            let prev = match self.nets.get_mut(name) {
                Some(state) => {
                    state.generation = generation;
                    Some(std::mem::replace(&mut state.counters, (now, now_at)))
                }
                None => {
                    self.nets.insert(
                        name.to_owned(),
                        NetState {
                            counters: (now, now_at),
                            generation,
                        },
                    );
                    None
                }
            };
            if let Some((prev, elapsed_s)) =
                prev.and_then(|(c, at)| Some((c, elapsed(at, now_at)?)))
            {
                let rate = |now: u64, prev: u64| now.saturating_sub(prev) as f64 / elapsed_s;
                net.rx_bytes_ps = rate(now.rx_bytes, prev.rx_bytes);
                net.tx_bytes_ps = rate(now.tx_bytes, prev.tx_bytes);
                net.rx_packets_ps = rate(now.rx_packets, prev.rx_packets);
                net.tx_packets_ps = rate(now.tx_packets, prev.tx_packets);
                net.rx_errors_ps = rate(now.rx_errors, prev.rx_errors);
                net.tx_errors_ps = rate(now.tx_errors, prev.tx_errors);
                net.rx_dropped_ps = rate(now.rx_dropped, prev.rx_dropped);
                net.tx_dropped_ps = rate(now.tx_dropped, prev.tx_dropped);
            }
            out.push(net);
        }
        self.nets.retain(|_, s| s.generation == generation);
        Ok(out)
    }
}

/// Seconds from `then` to `now`; `None` when the clock did not advance, so that rates come out
/// as 0 rather than infinite.
fn elapsed(then: Instant, now: Instant) -> Option<f64> {
    Some(now.saturating_duration_since(then).as_secs_f64()).filter(|&s| s > 0.0)
}

/// Fills `out` from the first `out.len()` fields; false when a field is missing or not a number.
fn fill<'a>(out: &mut [u64], mut fields: impl Iterator<Item = &'a [u8]>) -> bool {
    out.iter_mut().all(|slot| {
        fields
            .next()
            .and_then(parse_u64)
            .map(|v| *slot = v)
            .is_some()
    })
}

/// Jiffies per state from one `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuTimes {
    user: u64,
    nice: u64,
    system: u64,
    idle: u64,
    iowait: u64,
    irq: u64,
    softirq: u64,
    steal: u64,
}

/// Percentages of one interval; `busy = user + system + steal = 100 - idle - iowait`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuSplit {
    busy: f32,
    user: f32,
    system: f32,
    iowait: f32,
    steal: f32,
}

impl CpuTimes {
    /// The first eight counters; guest time is left out because `user` already includes it.
    fn parse<'a>(fields: impl Iterator<Item = &'a [u8]>) -> Option<Self> {
        let mut c = [0u64; 8];
        // Kernels before 2.6.11 have fewer columns; the missing ones are zero.
        for (slot, field) in c.iter_mut().zip(fields) {
            *slot = parse_u64(field)?;
        }
        let [user, nice, system, idle, iowait, irq, softirq, steal] = c;
        Some(Self {
            user,
            nice,
            system,
            idle,
            iowait,
            irq,
            softirq,
            steal,
        })
    }

    /// Nice time counts as user time and interrupt time as system time, as `vmstat` reports.
    fn split_since(&self, prev: &Self) -> CpuSplit {
        let d = |now: u64, prev: u64| now.saturating_sub(prev) as f64;
        let user = d(self.user, prev.user) + d(self.nice, prev.nice);
        let system =
            d(self.system, prev.system) + d(self.irq, prev.irq) + d(self.softirq, prev.softirq);
        let idle = d(self.idle, prev.idle);
        let iowait = d(self.iowait, prev.iowait);
        let steal = d(self.steal, prev.steal);
        let total = user + system + idle + iowait + steal;
        if total <= 0.0 {
            return CpuSplit {
                busy: 0.0,
                user: 0.0,
                system: 0.0,
                iowait: 0.0,
                steal: 0.0,
            };
        }
        let pct = |v: f64| (v / total * 100.0) as f32;
        CpuSplit {
            busy: pct(user + system + steal),
            user: pct(user),
            system: pct(system),
            iowait: pct(iowait),
            steal: pct(steal),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct DiskCounters {
    reads: u64,
    read_sectors: u64,
    writes: u64,
    write_sectors: u64,
    io_ticks_ms: u64,
}

#[derive(Debug)]
struct DiskState {
    /// Whether the device is reported; decided once per device since it needs a sysfs lookup.
    whole: bool,
    /// With the time they were read: a sample that failed half-way leaves some devices read
    /// at another time than others.
    counters: Option<(DiskCounters, Instant)>,
    generation: u64,
}

#[derive(Debug, Clone, Copy)]
struct NetCounters {
    rx_bytes: u64,
    rx_packets: u64,
    rx_errors: u64,
    rx_dropped: u64,
    tx_bytes: u64,
    tx_packets: u64,
    tx_errors: u64,
    tx_dropped: u64,
}

#[derive(Debug)]
struct NetState {
    counters: (NetCounters, Instant),
    generation: u64,
}

/// Whole disks (including md, dm and NVMe namespaces) are reported; partitions would count
/// their disk's I/O twice, and loop and ram devices are not storage.
fn is_whole_disk(sys: &Path, name: &str, path: &mut PathBuffer) -> bool {
    if name.starts_with("loop") || name.starts_with("ram") {
        return false;
    }
    path.set_base(sys, format_args!("class/block/{name}"));
    !path.join("partition").exists()
}

/// `(up, carrier)` of an interface from sysfs.
///
/// `carrier` cannot be read while the interface is administratively down (EINVAL): that and
/// any other failure mean no carrier. Loopback and some virtual links say `unknown` as their
/// operstate and count as up when they have a carrier.
fn link_state(sys: &Path, name: &str, path: &mut PathBuffer, buf: &mut ReadBuf) -> (bool, bool) {
    path.set_base(sys, format_args!("class/net/{name}"));
    let carrier = buf.read(path.join("carrier")).is_ok() && buf.bytes().trim_ascii() == b"1";
    // A failed read leaves the buffer empty: no operstate.
    let _ = buf.read(path.join("operstate"));
    let state = buf.bytes().trim_ascii();
    let up = state == b"up" || (state == b"unknown" && carrier);
    (up, carrier)
}

/// Whether a `/proc/self/mounts` entry is a filesystem on storage worth reporting: its
/// device is a path (`/dev/sda1`, `/dev/mapper/…`) or it is a local filesystem named otherwise
/// (ZFS datasets), and it is neither one of the [`PSEUDO_FS`] nor of the [`NETWORK_FS`] types.
fn is_device_backed(device: &[u8], fstype: &str) -> bool {
    !PSEUDO_FS.contains(&fstype)
        && !NETWORK_FS.contains(&fstype)
        && (device.first() == Some(&b'/') || DEVICELESS_LOCAL_FS.contains(&fstype))
}

/// Undoes the octal escapes (`\040` for a space, `\011`, `\012`, `\134`) the kernel writes in
/// `/proc/self/mounts` fields.
fn unescape_mount_field(field: &[u8]) -> String {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b == b'\\' {
            if let Some(&[a, b2, c]) = field.get(i + 1..i + 4) {
                let octal = |x: u8| (b'0'..=b'7').contains(&x).then(|| x - b'0');
                if let (Some(a), Some(b2), Some(c)) = (octal(a), octal(b2), octal(c)) {
                    if a <= 3 {
                        out.push((a << 6) | (b2 << 3) | c);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_fields_are_unescaped() {
        fn check(input: &str, expected: &str) {
            assert_eq!(
                unescape_mount_field(input.as_bytes()),
                expected,
                "{input:?}"
            );
        }
        check("/mnt/my\\040disk", "/mnt/my disk");
        check("/a\\011b\\012c\\134d", "/a\tb\nc\\d");
        check("/plain", "/plain");
        check("/trailing\\", "/trailing\\");
        check("/short\\04", "/short\\04");
        check("/not\\999octal", "/not\\999octal");
    }

    #[test]
    fn device_backed_filter() {
        fn check(device: &str, fstype: &str, expected: bool) {
            assert_eq!(
                is_device_backed(device.as_bytes(), fstype),
                expected,
                "{device} {fstype}"
            );
        }
        check("/dev/sda1", "ext4", true);
        check("/dev/mapper/vg-root", "xfs", true);
        check("/dev/nvme0n1p2", "btrfs", true);
        check("rpool/ROOT/ubuntu", "zfs", true);
        check("proc", "proc", false);
        check("tmpfs", "tmpfs", false);
        check("/tmpfs-with-path-device", "tmpfs", false);
        check("overlay", "overlay", false);
        check("/dev/loop3", "squashfs", false);
        check("server:/export", "nfs4", false);
        check("//server/share", "cifs", false);
    }

    #[test]
    fn cpu_split() {
        let t = |v: [u64; 8]| CpuTimes {
            user: v[0],
            nice: v[1],
            system: v[2],
            idle: v[3],
            iowait: v[4],
            irq: v[5],
            softirq: v[6],
            steal: v[7],
        };
        let prev = t([0; 8]);
        let s = t([10, 10, 10, 50, 10, 2, 3, 5]).split_since(&prev);
        assert_eq!(
            s,
            CpuSplit {
                busy: 40.0,
                user: 20.0,
                system: 15.0,
                iowait: 10.0,
                steal: 5.0
            }
        );
        assert_eq!(prev.split_since(&prev).busy, 0.0, "no time passed");
        // A counter going backwards (core hot-plug) reads as no time, not as a huge one.
        assert_eq!(prev.split_since(&t([1; 8])).busy, 0.0);
    }
}
