//! Static facts about the node (hardware, OS, boot time), read once at start and on request.
//!
//! Every source is optional: a file that is missing or unreadable leaves its fields empty or
//! zero, so the inventory of an odd machine is partial, never an error.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use crate::model::{DiskInfo, Inventory};
use crate::Roots;

/// Reads the node's inventory below `roots`.
pub fn read_inventory(roots: &Roots, agent_version: &str) -> Inventory {
    let cpu = read_to_string(&roots.proc.join("cpuinfo"))
        .map(|text| parse_cpuinfo(&text))
        .unwrap_or_default();
    let physical = if cpu.physical_cores > 0 {
        cpu.physical_cores
    } else {
        sysfs_physical_cores(&roots.sys)
    };
    let (memory_bytes, swap_bytes) = read_to_string(&roots.proc.join("meminfo"))
        .map(|text| {
            (
                meminfo_bytes(&text, "MemTotal"),
                meminfo_bytes(&text, "SwapTotal"),
            )
        })
        .unwrap_or_default();
    let disks = read_disks(&roots.sys);
    let os = read_to_string(&roots.etc.join("os-release"))
        .map(|text| parse_os_release(&text))
        .unwrap_or_default();

    Inventory {
        hostname: read_trimmed(&roots.proc.join("sys/kernel/hostname")),
        cpu_model: cpu.model,
        cpu_logical_cores: cpu.logical_cores,
        cpu_physical_cores: if physical > 0 {
            physical
        } else {
            cpu.logical_cores
        },
        memory_bytes,
        swap_bytes,
        disk_capacity_bytes: disks.iter().map(|d| d.capacity_bytes).sum(),
        disks,
        os_name: os.0,
        os_version: os.1,
        kernel: read_trimmed(&roots.proc.join("sys/kernel/osrelease")),
        arch: std::env::consts::ARCH.to_owned(),
        agent_version: agent_version.to_owned(),
        boot_time_ms: read_to_string(&roots.proc.join("stat"))
            .and_then(|text| boot_time_ms(&text))
            .unwrap_or(0),
    }
}

fn read_to_string(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn read_trimmed(path: &Path) -> String {
    read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[derive(Debug, Default, PartialEq)]
struct CpuInfo {
    model: String,
    logical_cores: u32,
    /// Distinct (package, core) pairs; 0 when the file does not say (ARM).
    physical_cores: u32,
}

/// Parses `/proc/cpuinfo`: one block per logical CPU, blocks separated by blank lines.
fn parse_cpuinfo(text: &str) -> CpuInfo {
    // Where the model is, in order of preference: x86 and most others say `model name`; arm64
    // names only the board (`Model`) or the SoC (`Hardware`); MIPS says `cpu model`, POWER `cpu`.
    const MODEL_KEYS: [&str; 5] = ["model name", "Model", "Hardware", "cpu model", "cpu"];
    let mut model: [Option<&str>; MODEL_KEYS.len()] = Default::default();
    let mut logical = 0;
    let mut cores = HashSet::new();
    let (mut package, mut core) = (None, None);
    for line in text.lines().chain([""]) {
        let Some((key, value)) = line.split_once(':') else {
            if line.trim().is_empty() {
                if let (Some(p), Some(c)) = (package.take(), core.take()) {
                    cores.insert((p, c));
                }
            }
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => logical += 1,
            "physical id" => package = Some(value),
            "core id" => core = Some(value),
            _ => {}
        }
        if let Some(i) = MODEL_KEYS.iter().position(|&k| k == key) {
            if model[i].is_none() && !value.is_empty() {
                model[i] = Some(value);
            }
        }
    }
    CpuInfo {
        model: model
            .iter()
            .flatten()
            .next()
            .map(|m| m.to_string())
            .unwrap_or_default(),
        logical_cores: logical,
        physical_cores: u32::try_from(cores.len()).unwrap_or(u32::MAX),
    }
}

/// Physical cores from sysfs topology, for the architectures whose cpuinfo lacks it.
fn sysfs_physical_cores(sys: &Path) -> u32 {
    let Ok(entries) = fs::read_dir(sys.join("devices/system/cpu")) else {
        return 0;
    };
    let mut cores = HashSet::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_cpu = name
            .to_str()
            .and_then(|n| n.strip_prefix("cpu"))
            .is_some_and(|n| n.parse::<u32>().is_ok());
        if !is_cpu {
            continue;
        }
        let topology = entry.path().join("topology");
        let package = read_trimmed(&topology.join("physical_package_id"));
        let core = read_trimmed(&topology.join("core_id"));
        if !core.is_empty() {
            cores.insert((package, core));
        }
    }
    u32::try_from(cores.len()).unwrap_or(u32::MAX)
}

/// A `/proc/meminfo` line like `MemTotal:  16318412 kB`, in bytes; 0 when absent.
fn meminfo_bytes(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            let mut words = rest.split_whitespace();
            let n: u64 = words.next()?.parse().ok()?;
            Some(if words.next() == Some("kB") {
                n.saturating_mul(1024)
            } else {
                n
            })
        })
        .unwrap_or(0)
}

/// The machine's whole disks, by name.
///
/// Only disks backed by hardware count (those with a `device` link): md, dm, loop, zram and
/// ram devices are views onto other storage or memory, and would count capacity twice.
/// Partitions, eMMC boot/RPMB areas and empty drives (card readers, optical) are left out.
fn read_disks(sys: &Path) -> Vec<DiskInfo> {
    let Ok(entries) = fs::read_dir(sys.join("class/block")) else {
        return Vec::new();
    };
    let mut disks: Vec<DiskInfo> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let dir = entry.path();
            let virtual_dev = ["loop", "ram", "zram", "dm-", "md", "nbd"]
                .iter()
                .any(|p| name.starts_with(p));
            let emmc_area =
                name.starts_with("mmcblk") && (name.contains("boot") || name.ends_with("rpmb"));
            if virtual_dev
                || emmc_area
                || dir.join("partition").exists()
                || !dir.join("device").exists()
            {
                return None;
            }
            let sectors: u64 = read_trimmed(&dir.join("size")).parse().ok()?;
            if sectors == 0 {
                return None;
            }
            // SCSI/SATA/NVMe devices have `model`; SD/eMMC cards only `name`.
            let mut model = read_trimmed(&dir.join("device/model"));
            if model.is_empty() {
                model = read_trimmed(&dir.join("device/name"));
            }
            Some(DiskInfo {
                name,
                // `size` counts 512-byte units whatever the device's sector size.
                capacity_bytes: sectors.saturating_mul(512),
                model,
                rotational: read_trimmed(&dir.join("queue/rotational")) == "1",
            })
        })
        .collect();
    disks.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    disks
}

/// `(name, version)` from os-release(5): `NAME` (else `PRETTY_NAME`, `ID`) and `VERSION_ID`
/// (else `VERSION`, else `BUILD_ID` as rolling releases have).
fn parse_os_release(text: &str) -> (String, String) {
    let fields: Vec<(&str, String)> = text
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let (key, value) = line.split_once('=')?;
            Some((key.trim(), unquote(value.trim())))
        })
        .collect();
    let first = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| {
                fields
                    .iter()
                    .find(|(key, v)| key == k && !v.is_empty())
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_default()
    };
    (
        first(&["NAME", "PRETTY_NAME", "ID"]),
        first(&["VERSION_ID", "VERSION", "BUILD_ID"]),
    )
}

/// Strips shell-style quotes and backslash escapes, the subset os-release(5) allows.
fn unquote(value: &str) -> String {
    let inner = ['"', '\'']
        .iter()
        .find_map(|&q| value.strip_prefix(q).and_then(|v| v.strip_suffix(q)))
        .unwrap_or(value);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' {
            chars.next().unwrap_or('\\')
        } else {
            c
        });
    }
    out
}

/// The `btime` line of `/proc/stat`, in ms since the epoch.
fn boot_time_ms(text: &str) -> Option<i64> {
    let secs: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    secs.checked_mul(1000)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports
mod tests {
    use std::path::PathBuf;

    use super::*;

    const CPUINFO_X86: &str = "\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz
physical id\t: 0
core id\t\t: 0
cpu cores\t: 2

processor\t: 1
model name\t: Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz
physical id\t: 0
core id\t\t: 1

processor\t: 2
model name\t: Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz
physical id\t: 0
core id\t\t: 0

processor\t: 3
model name\t: Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz
physical id\t: 0
core id\t\t: 1
";

    const CPUINFO_PI4: &str = "\
processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41

processor\t: 1
BogoMIPS\t: 108.00

Hardware\t: BCM2835
Revision\t: c03114
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
";

    struct Tree(tempfile::TempDir);

    impl Tree {
        fn new() -> Self {
            Self(tempfile::tempdir().unwrap())
        }

        fn roots(&self) -> Roots {
            Roots::under(self.0.path())
        }

        fn file(&self, rel: &str, content: &str) -> &Self {
            let path = self.0.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
            self
        }

        fn dir(&self, rel: &str) -> PathBuf {
            let path = self.0.path().join(rel);
            fs::create_dir_all(&path).unwrap();
            path
        }

        /// A block device under `sys/class/block/<name>`.
        fn disk(&self, name: &str, sectors: u64, model: Option<&str>, rotational: bool) -> &Self {
            let base = format!("sys/class/block/{name}");
            self.file(&format!("{base}/size"), &format!("{sectors}\n"));
            self.file(
                &format!("{base}/queue/rotational"),
                if rotational { "1\n" } else { "0\n" },
            );
            self.dir(&format!("{base}/device"));
            if let Some(model) = model {
                self.file(&format!("{base}/device/model"), &format!("{model}   \n"));
            }
            self
        }
    }

    #[test]
    fn cpuinfo_x86_counts_distinct_cores() {
        let cpu = parse_cpuinfo(CPUINFO_X86);
        assert_eq!(
            cpu,
            CpuInfo {
                model: "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz".into(),
                logical_cores: 4,
                physical_cores: 2
            }
        );
    }

    #[test]
    fn cpuinfo_arm_names_the_board() {
        let cpu = parse_cpuinfo(CPUINFO_PI4);
        assert_eq!(cpu.model, "Raspberry Pi 4 Model B Rev 1.4");
        assert_eq!((cpu.logical_cores, cpu.physical_cores), (2, 0));
        let older = parse_cpuinfo("processor : 0\nHardware : BCM2835\n");
        assert_eq!(older.model, "BCM2835");
    }

    #[test]
    fn os_release_fields() {
        fn check(text: &str, name: &str, version: &str) {
            assert_eq!(
                parse_os_release(text),
                (name.to_owned(), version.to_owned()),
                "{text}"
            );
        }
        check(
            "NAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nPRETTY_NAME=\"Ubuntu 24.04 LTS\"\n",
            "Ubuntu",
            "24.04",
        );
        check(
            "# comment\nNAME='Debian GNU/Linux'\nVERSION=\"12 (bookworm)\"\n",
            "Debian GNU/Linux",
            "12 (bookworm)",
        );
        check(
            "NAME=\"Arch Linux\"\nBUILD_ID=rolling\n",
            "Arch Linux",
            "rolling",
        );
        check(
            "PRETTY_NAME=\"A \\\"quoted\\\" OS\"\n",
            "A \"quoted\" OS",
            "",
        );
        check("", "", "");
    }

    #[test]
    fn fixture_tree() {
        let t = Tree::new();
        t.file("proc/sys/kernel/hostname", "node-7\n")
            .file("proc/sys/kernel/osrelease", "6.8.0-45-generic\n")
            .file("proc/cpuinfo", CPUINFO_X86)
            .file(
                "proc/meminfo",
                "MemTotal:       16318412 kB\nMemFree: 1 kB\nSwapTotal:       2097148 kB\n",
            )
            .file(
                "proc/stat",
                "cpu  1 2 3 4\nintr 5\nbtime 1700000000\nprocesses 9\n",
            )
            .file("etc/os-release", "NAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\n")
            .disk("sda", 1_953_525_168, Some("WDC WD10EZEX-08W"), true)
            .disk(
                "nvme0n1",
                1_000_215_216,
                Some("Samsung SSD 970 EVO Plus 500GB"),
                false,
            )
            .disk("mmcblk0", 62_333_952, None, false)
            .file("sys/class/block/mmcblk0/device/name", "SD64G\n")
            .disk("mmcblk0boot0", 8192, None, false)
            .disk("sr0", 0, Some("DVD-RW"), true)
            .disk("loop0", 1000, None, false)
            .file("sys/class/block/sda1/partition", "1\n")
            .disk("sda1", 1000, None, true)
            .file("sys/class/block/dm-0/size", "1000\n");

        let inv = read_inventory(&t.roots(), "1.2.3");
        let disks: Vec<(&str, u64, &str, bool)> = inv
            .disks
            .iter()
            .map(|d| {
                (
                    d.name.as_str(),
                    d.capacity_bytes,
                    d.model.as_str(),
                    d.rotational,
                )
            })
            .collect();
        assert_eq!(
            disks,
            [
                ("mmcblk0", 62_333_952 * 512, "SD64G", false),
                (
                    "nvme0n1",
                    1_000_215_216 * 512,
                    "Samsung SSD 970 EVO Plus 500GB",
                    false
                ),
                ("sda", 1_953_525_168 * 512, "WDC WD10EZEX-08W", true),
            ]
        );
        let expected = Inventory {
            hostname: "node-7".into(),
            cpu_model: "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz".into(),
            cpu_logical_cores: 4,
            cpu_physical_cores: 2,
            memory_bytes: 16_318_412 * 1024,
            swap_bytes: 2_097_148 * 1024,
            disk_capacity_bytes: (62_333_952 + 1_000_215_216 + 1_953_525_168) * 512,
            disks: inv.disks.clone(),
            os_name: "Ubuntu".into(),
            os_version: "24.04".into(),
            kernel: "6.8.0-45-generic".into(),
            arch: std::env::consts::ARCH.into(),
            agent_version: "1.2.3".into(),
            boot_time_ms: 1_700_000_000_000,
        };
        assert_eq!(inv, expected);
    }

    #[test]
    fn arm_physical_cores_from_sysfs_topology() {
        let t = Tree::new();
        t.file("proc/cpuinfo", CPUINFO_PI4);
        for (cpu, core) in [(0, 0), (1, 1)] {
            t.file(
                &format!("sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id"),
                "0\n",
            )
            .file(
                &format!("sys/devices/system/cpu/cpu{cpu}/topology/core_id"),
                &format!("{core}\n"),
            );
        }
        t.dir("sys/devices/system/cpu/cpufreq");
        let inv = read_inventory(&t.roots(), "x");
        assert_eq!((inv.cpu_logical_cores, inv.cpu_physical_cores), (2, 2));

        // Without topology either, physical falls back to logical.
        let bare = Tree::new();
        bare.file("proc/cpuinfo", CPUINFO_PI4);
        let inv = read_inventory(&bare.roots(), "x");
        assert_eq!((inv.cpu_logical_cores, inv.cpu_physical_cores), (2, 2));
    }

    #[test]
    fn empty_tree_gives_empty_inventory() {
        let t = Tree::new();
        let inv = read_inventory(&t.roots(), "0.1.0");
        assert_eq!(
            inv,
            Inventory {
                arch: std::env::consts::ARCH.into(),
                agent_version: "0.1.0".into(),
                ..Inventory::default()
            }
        );
    }

    #[test]
    fn garbage_files_do_not_panic() {
        let t = Tree::new();
        t.file("proc/cpuinfo", ":::\n\n: x\nprocessor\nmodel name:\n")
            .file("proc/meminfo", "MemTotal: lots kB\nSwapTotal:\n")
            .file("proc/stat", "btime soon\n")
            .file("etc/os-release", "=\n\"\nNAME=\"\n")
            .file("sys/class/block/sda/size", "-1\n");
        t.dir("sys/class/block/sda/device");
        let inv = read_inventory(&t.roots(), "x");
        assert_eq!(
            (inv.memory_bytes, inv.boot_time_ms, inv.disks.len()),
            (0, 0, 0)
        );
    }

    /// The real host: whatever it is, the basics are there.
    #[test]
    fn this_host() {
        let inv = read_inventory(&Roots::default(), "test");
        assert!(!inv.hostname.is_empty(), "{inv:?}");
        assert!(!inv.kernel.is_empty(), "{inv:?}");
        assert!(inv.cpu_logical_cores >= 1, "{inv:?}");
        assert!(
            inv.cpu_physical_cores >= 1 && inv.cpu_physical_cores <= inv.cpu_logical_cores,
            "{inv:?}"
        );
        assert!(inv.memory_bytes > 0, "{inv:?}");
        assert!(inv.boot_time_ms > 1_000_000_000_000, "{inv:?}");
        assert_eq!(
            inv.disk_capacity_bytes,
            inv.disks.iter().map(|d| d.capacity_bytes).sum::<u64>()
        );
    }
}
