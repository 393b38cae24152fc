//! Linux hwmon sensors: every temperature, voltage, current, power and fan input under
//! `<sys>/class/hwmon/hwmon*/`.
//!
//! The collector is read once a second, so it scans the directories (which chips and inputs
//! exist, their labels and limits) only every `RESCAN_EVERY` reads, or right after an input
//! vanished; a read in between opens just the `*_input` files and the chip's own alarm flags.
//!
//! Identity: a chip is `<name>.<device>`, the device being the basename of the `device`
//! link (`k10temp.0000:00:18.3`, `lm75.1-0048`), so two chips with one driver stay apart and
//! the id survives the `hwmonN` renumbering of a reboot. A device already named after the chip
//! is the id by itself (`coretemp.0`, `nct6775.656`, `nvme0`). A chip without a device link
//! falls back to `<name>.hwmonN`, and `.hwmonN` is appended to break the tie should one device
//! carry two chips of one name.
//!
//! Limits, converted to the reading's unit:
//! - `min` is `*_min`, or `*_lcrit` when the chip has no `*_min`; `max` is `*_max`; `crit` is
//!   `*_crit`. `*_emergency`, `*_cap` and hysteresis files are not reported.
//! - A `min`/`max` pair with `max <= min` is dropped: Super I/O chips read 0/0 until someone
//!   programs the window, and alarming on it would flag every such input.
//! - `alarm` is set when the value is strictly beyond a limit (a fan at 0 RPM with
//!   `fanN_min > 0` is below its min), or when one of the chip's `<input>_*alarm` or
//!   `<input>_fault` files reads non-zero.
//!
//! An input whose `<input>_enable` reads 0 is switched off by its driver and left out.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::model::{SensorKind, SensorReading, SensorSource};
use crate::Roots;

/// Reads between two directory scans: a minute at the agent's 1 Hz, soon enough to pick up a
/// chip that appeared later (a USB device, `drivetemp` loaded after boot) or a changed limit.
const RESCAN_EVERY: u32 = 60;

/// Reads every hwmon input of the machine.
#[derive(Debug)]
pub struct HwmonCollector {
    roots: Roots,
    inputs: Vec<Input>,
    /// 0 means the next read scans first.
    reads_until_scan: u32,
    errors_total: u64,
    /// Inputs already logged as unreadable, so a broken sensor logs once, not every second.
    warned: HashSet<String>,
}

/// One input found by the last scan: what to open each read, and the reading to fill in.
#[derive(Debug)]
struct Input {
    path: PathBuf,
    /// Divisor from the sysfs unit (m°C, mV, mA, µW, RPM) to the model's.
    scale: f64,
    alarm_paths: Vec<PathBuf>,
    template: SensorReading,
}

impl HwmonCollector {
    pub fn new(roots: Roots) -> Self {
        Self {
            roots,
            inputs: Vec::new(),
            reads_until_scan: 0,
            errors_total: 0,
            warned: HashSet::new(),
        }
    }

    /// Every `temp*_input` (m°C → °C), `in*_input` (mV → V), `curr*_input` (mA → A),
    /// `power*_input` (µW → W; `power*_average` where a chip has no input) and `fan*_input`
    /// (RPM), ordered by chip id, then kind, then input number.
    pub fn read(&mut self) -> Vec<SensorReading> {
        if self.reads_until_scan == 0 {
            self.inputs = scan(&self.roots.sys.join("class/hwmon"));
            self.reads_until_scan = RESCAN_EVERY;
        }
        self.reads_until_scan -= 1;

        let mut out = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            match read_attr(&input.path) {
                Ok(raw) => {
                    let value = raw as f64 / input.scale;
                    let t = &input.template;
                    let alarm = beyond(value, t.min, t.max, t.crit)
                        || input
                            .alarm_paths
                            .iter()
                            .any(|p| read_attr(p).is_ok_and(|flag| flag != 0));
                    out.push(SensorReading {
                        value,
                        alarm,
                        ..t.clone()
                    });
                }
                Err(e) => {
                    self.errors_total += 1;
                    // The chip went away (module unloaded, device unplugged): the cached layout
                    // is stale, so the next read rescans instead of failing for a minute.
                    if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV)
                    {
                        self.reads_until_scan = 0;
                    }
                    if self.warned.insert(input.template.id.clone()) {
                        tracing::warn!(
                            sensor = %input.template.id,
                            path = %input.path.display(),
                            error = %e,
                            "hwmon input unreadable; further failures are only counted",
                        );
                    }
                }
            }
        }
        out
    }

    /// Inputs that could not be read since start (cumulative; one per input per read).
    pub fn errors_total(&self) -> u64 {
        self.errors_total
    }
}

/// Strictly outside the window, or past the critical limit.
fn beyond(value: f64, min: Option<f64>, max: Option<f64>, crit: Option<f64>) -> bool {
    min.is_some_and(|m| value < m)
        || max.is_some_and(|m| value > m)
        || crit.is_some_and(|c| value > c)
}

/// Finds every chip and its inputs, ordered so the output is stable from read to read.
fn scan(class: &Path) -> Vec<Input> {
    let Ok(entries) = fs::read_dir(class) else {
        return Vec::new();
    };
    let mut dirs: Vec<(u32, String)> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let n = name.strip_prefix("hwmon")?.parse().ok()?;
            Some((n, name))
        })
        .collect();
    dirs.sort_unstable();

    let mut chips = HashSet::new();
    let mut inputs = Vec::new();
    for (_, dir_name) in dirs {
        let dir = class.join(&dir_name);
        let Some((attr_dir, name)) = chip_name(&dir) else {
            continue;
        };
        let device = fs::read_link(dir.join("device"))
            .ok()
            .and_then(|target| target.file_name().map(|s| s.to_string_lossy().into_owned()));
        let mut chip = chip_id(&name, device.as_deref(), &dir_name);
        // Only a tie-breaker: hwmonN is not stable across boots.
        if !chips.insert(chip.clone()) {
            chip = format!("{chip}.{dir_name}");
            chips.insert(chip.clone());
        }
        scan_chip(&attr_dir, &chip, &mut inputs);
    }
    // By chip id rather than hwmonN, whose numbering changes across boots; the sort is stable,
    // so each chip's inputs keep their kind and number order.
    inputs.sort_by(|a, b| a.template.chip.cmp(&b.template.chip));
    inputs
}

fn chip_id(name: &str, device: Option<&str>, hwmon_dir: &str) -> String {
    match device {
        // Platform devices are already named after their driver (`coretemp.0`, `nvme0`).
        Some(dev)
            if dev
                .strip_prefix(name)
                .is_some_and(|rest| !rest.starts_with(char::is_alphabetic)) =>
        {
            dev.to_owned()
        }
        Some(dev) => format!("{name}.{dev}"),
        None => format!("{name}.{hwmon_dir}"),
    }
}

/// The directory holding the chip's attributes and its name: `hwmonN/`, or `hwmonN/device/`
/// for drivers that predate the hwmon registration API of Linux 3.13.
fn chip_name(dir: &Path) -> Option<(PathBuf, String)> {
    [dir.to_path_buf(), dir.join("device")]
        .into_iter()
        .find_map(|d| {
            let name = fs::read_to_string(d.join("name")).ok()?;
            let name = name.trim();
            (!name.is_empty()).then(|| (d.clone(), name.to_owned()))
        })
}

/// Kind, divisor to the model's unit and input number of an attribute stem like `temp3`.
fn classify(stem: &str) -> Option<(SensorKind, f64, u32)> {
    const KINDS: [(&str, SensorKind, f64); 5] = [
        ("temp", SensorKind::Temperature, 1e3),
        ("in", SensorKind::Voltage, 1e3),
        ("curr", SensorKind::Current, 1e3),
        ("power", SensorKind::Power, 1e6),
        ("fan", SensorKind::Fan, 1.0),
    ];
    KINDS.iter().find_map(|&(prefix, kind, scale)| {
        let digits = stem.strip_prefix(prefix)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((kind, scale, digits.parse().ok()?))
    })
}

fn kind_rank(kind: SensorKind) -> u8 {
    match kind {
        SensorKind::Temperature => 0,
        SensorKind::Voltage => 1,
        SensorKind::Current => 2,
        SensorKind::Power => 3,
        SensorKind::Fan => 4,
        SensorKind::Unknown => 5,
    }
}

fn scan_chip(dir: &Path, chip: &str, out: &mut Vec<Input>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let files: HashSet<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();

    // stem (`temp1`) -> the file carrying its value.
    let mut values: HashMap<&str, &str> = HashMap::new();
    for file in &files {
        if let Some(stem) = file.strip_suffix("_input") {
            values.insert(stem, file);
        } else if let Some(stem) = file.strip_suffix("_average") {
            // Some power meters (amdgpu, acpi_power_meter) only offer an average.
            if stem.starts_with("power") && !files.contains(&format!("{stem}_input")) {
                values.insert(stem, file);
            }
        }
    }
    let mut found: Vec<(u8, u32, &str, &str, SensorKind, f64)> = values
        .into_iter()
        .filter_map(|(stem, file)| {
            let (kind, scale, n) = classify(stem)?;
            Some((kind_rank(kind), n, stem, file, kind, scale))
        })
        .collect();
    found.sort_unstable_by_key(|&(rank, n, ..)| (rank, n));

    for (_, _, stem, file, kind, scale) in found {
        let attr = |suffix: &str| {
            let name = format!("{stem}_{suffix}");
            files.contains(&name).then(|| dir.join(name))
        };
        if attr("enable").is_some_and(|p| read_attr(&p).is_ok_and(|v| v == 0)) {
            continue;
        }
        let limit = |suffix: &str| {
            attr(suffix)
                .and_then(|p| read_attr(&p).ok())
                .map(|raw| raw as f64 / scale)
        };
        let mut min = limit("min").or_else(|| limit("lcrit"));
        let mut max = limit("max");
        if let (Some(lo), Some(hi)) = (min, max) {
            if hi <= lo {
                (min, max) = (None, None);
            }
        }
        let label = attr("label")
            .and_then(|p| fs::read_to_string(p).ok())
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| stem.to_owned());

        let prefix = format!("{stem}_");
        let mut alarm_paths: Vec<PathBuf> = files
            .iter()
            .filter(|f| {
                f.strip_prefix(&prefix)
                    .is_some_and(|rest| rest.ends_with("alarm") || rest == "fault")
            })
            .map(|f| dir.join(f))
            .collect();
        alarm_paths.sort_unstable();

        out.push(Input {
            path: dir.join(file),
            scale,
            alarm_paths,
            template: SensorReading {
                id: format!("{chip}/{stem}"),
                chip: chip.to_owned(),
                label,
                kind,
                source: SensorSource::Hwmon,
                value: 0.0,
                min,
                max,
                crit: limit("crit"),
                alarm: false,
            },
        });
    }
}

/// Reads one integer attribute.
///
/// One `read` call: sysfs hands out a whole attribute at once, and skipping the read that would
/// confirm end-of-file saves a syscall per input per second. The buffer is on the stack, so
/// the 1 Hz path does not allocate.
fn read_attr(path: &Path) -> io::Result<i64> {
    let mut buf = [0u8; 32];
    let n = fs::File::open(path)?.read(&mut buf)?;
    let text = buf
        .get(..n)
        .filter(|_| n < buf.len())
        .and_then(|b| std::str::from_utf8(b).ok());
    text.and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an integer attribute"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports
mod tests {
    use super::*;

    #[test]
    fn classify_stems() {
        fn check(stem: &str, expected: Option<(SensorKind, u32)>) {
            assert_eq!(classify(stem).map(|(k, _, n)| (k, n)), expected, "{stem}");
        }
        check("temp1", Some((SensorKind::Temperature, 1)));
        check("in0", Some((SensorKind::Voltage, 0)));
        check("curr12", Some((SensorKind::Current, 12)));
        check("power1", Some((SensorKind::Power, 1)));
        check("fan3", Some((SensorKind::Fan, 3)));
        check("temp", None);
        check("temp1_crit", None);
        check("intrusion0", None);
        check("energy1", None);
        check("humidity1", None);
    }

    #[test]
    fn beyond_limits() {
        assert!(!beyond(50.0, None, None, None));
        assert!(beyond(81.0, None, Some(80.0), None));
        assert!(!beyond(80.0, None, Some(80.0), None));
        assert!(beyond(0.9, Some(1.0), Some(2.0), None));
        assert!(beyond(101.0, None, Some(110.0), Some(100.0)));
    }

    #[test]
    fn new_chips_appear_after_a_rescan() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots::under(dir.path());
        let class = roots.sys.join("class/hwmon");
        let add_chip = |n: u32| {
            let chip = class.join(format!("hwmon{n}"));
            fs::create_dir_all(&chip).unwrap();
            fs::write(chip.join("name"), "acpitz\n").unwrap();
            fs::write(chip.join("temp1_input"), "40000\n").unwrap();
        };
        add_chip(0);
        let mut hwmon = HwmonCollector::new(roots);
        assert_eq!(hwmon.read().len(), 1);

        add_chip(1);
        for _ in 1..RESCAN_EVERY {
            assert_eq!(
                hwmon.read().len(),
                1,
                "the cached scan holds between rescans"
            );
        }
        let ids: Vec<String> = hwmon.read().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["acpitz.hwmon0/temp1", "acpitz.hwmon1/temp1"]);
    }

    #[test]
    fn read_attr_rejects_junk() {
        let dir = tempfile::tempdir().unwrap();
        let check = |content: &str, expected: Option<i64>| {
            let p = dir.path().join("attr");
            fs::write(&p, content).unwrap();
            assert_eq!(read_attr(&p).ok(), expected, "{content:?}");
        };
        check("45000\n", Some(45000));
        check("-5000\n", Some(-5000));
        check("0", Some(0));
        check("", None);
        check("N/A\n", None);
        check(&"1".repeat(40), None);
    }
}
