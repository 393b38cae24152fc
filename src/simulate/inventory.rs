//! The inventory of one simulated node: the static facts an agent reads at start (CPU model and
//! cores, memory, disks, OS), consistent with what the node's reports say.

use gridmon_nats::wire::{DiskInfo, HostMetrics, Inventory};
use gridmon_nats::NodeId;

use super::rng::Rng;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Its own stream of draws, so adding the inventory left every report of a seed as it was.
const STREAM_SALT: u64 = 0x1A7E_A70B_0000_0000;

/// CPU models by logical core count: (logical cores, `model name`, physical cores). Virtual
/// machines (the `Processor (…)` and `EPYC-…` models) show one thread per core.
const CPUS: &[(u32, &str, u32)] = &[
    (4, "Intel(R) Xeon(R) E-2224 CPU @ 3.40GHz", 4),
    (4, "Intel Xeon Processor (Icelake)", 4),
    (8, "Intel(R) Xeon(R) E-2234 CPU @ 3.60GHz", 4),
    (8, "AMD EPYC-Milan Processor", 8),
    (16, "AMD EPYC 7252 8-Core Processor", 8),
    (16, "Intel(R) Xeon(R) Silver 4208 CPU @ 2.10GHz", 8),
    (24, "Intel(R) Xeon(R) Silver 4214 CPU @ 2.20GHz", 12),
    (24, "AMD EPYC 7272 12-Core Processor", 12),
    (32, "AMD EPYC 7302P 16-Core Processor", 16),
    (32, "Intel(R) Xeon(R) Silver 4314 CPU @ 2.40GHz", 16),
    (48, "Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz", 24),
    (48, "AMD EPYC 7413 24-Core Processor", 24),
    (64, "AMD EPYC 7543P 32-Core Processor", 32),
    (64, "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", 32),
];

/// (`NAME`, `VERSION_ID` of os-release, kernel release); repeats weigh the draw.
const OSES: &[(&str, &str, &str)] = &[
    ("Ubuntu", "22.04", "5.15.0-105-generic"),
    ("Ubuntu", "22.04", "5.15.0-112-generic"),
    ("Ubuntu", "24.04", "6.8.0-31-generic"),
    ("Ubuntu", "24.04", "6.8.0-45-generic"),
    ("Debian GNU/Linux", "12", "6.1.0-21-amd64"),
    ("Rocky Linux", "9.3", "5.14.0-362.24.1.el9_3.x86_64"),
];

/// Drive models by the size (GiB) of the filesystem on them, two vendors each: NVMe drives up to
/// 1 TiB, hard disks above.
const DRIVES: &[(u64, [&str; 2])] = &[
    (256, ["SAMSUNG MZVL2256HCHQ-00B00", "KXG60ZNV256G TOSHIBA"]),
    (512, ["SAMSUNG MZVL2512HCJQ-00B00", "KXG60ZNV512G TOSHIBA"]),
    (1024, ["SAMSUNG MZVL21T0HCLR-00B00", "KXG60ZNV1T02 TOSHIBA"]),
    (2048, ["ST2000NM000A-2J2100", "TOSHIBA MG04ACA200E"]),
    (4096, ["ST4000NM000A-2HZ100", "TOSHIBA MG04ACA400E"]),
    (8192, ["ST8000NM000A-2KE101", "TOSHIBA MG06ACA800E"]),
];

/// The inventory of node `index` of the fleet of `seed`, from its first report's `host` (cores,
/// memory, disks and the filesystems on them) and its boot time.
pub fn simulated(
    seed: u64,
    index: usize,
    id: &NodeId,
    host: &HostMetrics,
    boot_ms: i64,
) -> Inventory {
    let mut rng = Rng::derive(seed ^ STREAM_SALT, index as u64);
    let logical = u32::try_from(host.cpu.per_core_pct.len()).unwrap_or(u32::MAX);
    let models: Vec<&(u32, &str, u32)> = CPUS.iter().filter(|c| c.0 == logical).collect();
    let (cpu_model, physical) = if models.is_empty() {
        ("Intel Xeon Processor (Cascadelake)", logical)
    } else {
        let c = rng.pick(&models);
        (c.1, c.2)
    };
    let (os_name, os_version, kernel) = *rng.pick(OSES);
    let disks: Vec<DiskInfo> = host
        .disks
        .iter()
        .map(|d| {
            let dev = format!("/dev/{}", d.name);
            let fs_bytes: u64 = host
                .filesystems
                .iter()
                .filter(|f| f.device.starts_with(&dev))
                .map(|f| f.total_bytes)
                .sum();
            let nvme = d.name.starts_with("nvme");
            // The partition table, and on the system disk the EFI and /boot partitions.
            let overhead = if nvme { GIB + 512 * MIB } else { MIB };
            let model = DRIVES
                .iter()
                .find(|(gib, _)| gib * GIB >= fs_bytes)
                .map_or("QEMU HARDDISK", |(_, m)| *rng.pick(m));
            DiskInfo {
                name: d.name.clone(),
                capacity_bytes: fs_bytes + overhead,
                model: model.into(),
                rotational: !nvme,
            }
        })
        .collect();
    Inventory {
        hostname: id.node.clone(),
        cpu_model: cpu_model.into(),
        cpu_logical_cores: logical,
        cpu_physical_cores: physical,
        memory_bytes: host.memory.total_bytes,
        swap_bytes: host.memory.swap_total_bytes,
        disk_capacity_bytes: disks.iter().map(|d| d.capacity_bytes).sum(),
        disks,
        os_name: os_name.into(),
        os_version: os_version.into(),
        kernel: kernel.into(),
        arch: "x86_64".into(),
        agent_version: "simulated".into(),
        boot_time_ms: boot_ms,
    }
}
