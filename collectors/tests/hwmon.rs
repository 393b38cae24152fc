//! hwmon collector against fixture `/sys` trees laid out as the kernel does.

#![allow(clippy::unwrap_used)] // a panic is how a test reports

mod fixtures;

use fixtures::by_id;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use gridmon_collectors::hwmon::HwmonCollector;
use gridmon_collectors::model::{SensorKind, SensorReading, SensorSource};
use gridmon_collectors::Roots;

/// A fixture tree with `sys/class/hwmon` below a temporary directory.
struct Sys {
    dir: tempfile::TempDir,
}

impl Sys {
    fn new() -> Self {
        let sys = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir_all(sys.class()).unwrap();
        sys
    }

    fn roots(&self) -> Roots {
        Roots::under(self.dir.path())
    }

    fn class(&self) -> PathBuf {
        self.dir.path().join("sys/class/hwmon")
    }

    /// `hwmonN` with its attributes in `hwmonN/` and, when given, a `device` link to a
    /// directory named `device` (as `../../../devices/platform/coretemp.0` would be).
    fn chip(&self, n: u32, name: &str, device: Option<&str>, attrs: &[(&str, &str)]) -> PathBuf {
        let dir = self.class().join(format!("hwmon{n}"));
        fs::create_dir_all(&dir).unwrap();
        if let Some(device) = device {
            let target = self.dir.path().join("sys/devices/platform").join(device);
            fs::create_dir_all(&target).unwrap();
            symlink(&target, dir.join("device")).unwrap();
        }
        write_attrs(&dir, &[("name", name)]);
        write_attrs(&dir, attrs);
        dir
    }
}

fn write_attrs(dir: &Path, attrs: &[(&str, &str)]) {
    for (file, content) in attrs {
        fs::write(dir.join(file), format!("{content}\n")).unwrap();
    }
}

#[test]
fn chips_with_one_name_stay_apart() {
    let sys = Sys::new();
    sys.chip(0, "nvme", Some("nvme1"), &[("temp1_input", "41850")]);
    sys.chip(1, "nvme", Some("nvme0"), &[("temp1_input", "38850")]);
    sys.chip(2, "acpitz", None, &[("temp1_input", "27800")]);
    sys.chip(
        3,
        "k10temp",
        Some("0000:00:18.3"),
        &[("temp1_input", "50125"), ("temp1_label", "Tctl")],
    );
    sys.chip(4, "lm75", Some("1-0048"), &[("temp1_input", "21000")]);
    sys.chip(5, "lm75", Some("1-0049"), &[("temp1_input", "22000")]);
    // One device carrying two chips of one name.
    let twin = sys.chip(6, "dual", Some("dual.0"), &[("temp1_input", "1000")]);
    let device = fs::read_link(twin.join("device")).unwrap();
    let twin2 = sys.class().join("hwmon7");
    fs::create_dir_all(&twin2).unwrap();
    symlink(device, twin2.join("device")).unwrap();
    write_attrs(&twin2, &[("name", "dual"), ("temp1_input", "2000")]);

    let readings = HwmonCollector::new(sys.roots()).read();
    let got: Vec<(&str, &str, f64)> = readings
        .iter()
        .map(|r| (r.id.as_str(), r.label.as_str(), r.value))
        .collect();
    assert_eq!(
        got,
        [
            ("acpitz.hwmon2/temp1", "temp1", 27.8),
            ("dual.0/temp1", "temp1", 1.0),
            ("dual.0.hwmon7/temp1", "temp1", 2.0),
            ("k10temp.0000:00:18.3/temp1", "Tctl", 50.125),
            ("lm75.1-0048/temp1", "temp1", 21.0),
            ("lm75.1-0049/temp1", "temp1", 22.0),
            ("nvme0/temp1", "temp1", 38.85),
            ("nvme1/temp1", "temp1", 41.85),
        ]
    );
    for r in &readings {
        assert_eq!(format!("{}/temp1", r.chip), r.id);
    }
    assert!(readings
        .iter()
        .all(|r| r.source == SensorSource::Hwmon && !r.alarm));
}

#[test]
fn units_are_converted_and_ordered_by_kind() {
    let sys = Sys::new();
    sys.chip(
        0,
        "nct6775",
        Some("nct6775.656"),
        &[
            ("fan2_input", "1200"),
            ("power1_input", "12500000"),
            ("curr1_input", "1500"),
            ("in0_input", "1216"),
            ("in0_label", "Vcore"),
            ("temp2_input", "-5500"),
            ("temp10_input", "30000"),
            ("temp1_input", "45500"),
            ("temp1_label", "SYSTIN"),
            ("temp1_type", "4"),
            ("intrusion0_alarm", "1"),
        ],
    );
    let readings = HwmonCollector::new(sys.roots()).read();
    let got: Vec<(&str, &str, SensorKind, f64)> = readings
        .iter()
        .map(|r| (r.id.as_str(), r.label.as_str(), r.kind, r.value))
        .collect();
    assert_eq!(
        got,
        [
            ("nct6775.656/temp1", "SYSTIN", SensorKind::Temperature, 45.5),
            ("nct6775.656/temp2", "temp2", SensorKind::Temperature, -5.5),
            (
                "nct6775.656/temp10",
                "temp10",
                SensorKind::Temperature,
                30.0
            ),
            ("nct6775.656/in0", "Vcore", SensorKind::Voltage, 1.216),
            ("nct6775.656/curr1", "curr1", SensorKind::Current, 1.5),
            ("nct6775.656/power1", "power1", SensorKind::Power, 12.5),
            ("nct6775.656/fan2", "fan2", SensorKind::Fan, 1200.0),
        ]
    );
}

#[test]
fn power_average_stands_in_for_a_missing_input() {
    let sys = Sys::new();
    sys.chip(
        0,
        "amdgpu",
        Some("0000:03:00.0"),
        &[("power1_average", "35000000"), ("power1_cap", "200000000")],
    );
    sys.chip(
        1,
        "meter",
        Some("meter.0"),
        &[("power1_average", "1000000"), ("power1_input", "2000000")],
    );
    let readings = HwmonCollector::new(sys.roots()).read();
    let got: Vec<(&str, f64)> = readings.iter().map(|r| (r.id.as_str(), r.value)).collect();
    assert_eq!(
        got,
        [
            ("amdgpu.0000:03:00.0/power1", 35.0),
            ("meter.0/power1", 2.0)
        ]
    );
}

#[test]
fn limits_and_alarms() {
    let sys = Sys::new();
    let chip = sys.chip(
        0,
        "it8728",
        Some("it87.2608"),
        &[
            // Within limits, limits converted to °C.
            ("temp1_input", "40000"),
            ("temp1_max", "80000"),
            ("temp1_crit", "100000"),
            // Above max.
            ("temp2_input", "85000"),
            ("temp2_max", "80000"),
            // Above crit, no max.
            ("temp3_input", "101000"),
            ("temp3_crit", "100000"),
            // The chip's own flag.
            ("temp4_input", "30000"),
            ("temp4_max_alarm", "1"),
            // A diode fault.
            ("temp5_input", "-128000"),
            ("temp5_fault", "1"),
            // Flags clear.
            ("temp6_input", "30000"),
            ("temp6_alarm", "0"),
            ("temp6_fault", "0"),
            // Below min; max reported in volts.
            ("in0_input", "1100"),
            ("in0_min", "1150"),
            ("in0_max", "1300"),
            // No min: lcrit stands in.
            ("in1_input", "3000"),
            ("in1_lcrit", "3100"),
            // An unprogrammed 0/0 window is no window.
            ("in2_input", "5000"),
            ("in2_min", "0"),
            ("in2_max", "0"),
            // A fan stopped although it has a minimum.
            ("fan1_input", "0"),
            ("fan1_min", "300"),
            // A fan stopped on purpose (no minimum set).
            ("fan2_input", "0"),
            ("fan2_min", "0"),
            // Switched off by its driver: left out.
            ("fan3_input", "0"),
            ("fan3_enable", "0"),
            ("power1_input", "150000000"),
            ("power1_max", "120000000"),
        ],
    );
    let mut hwmon = HwmonCollector::new(sys.roots());
    let readings = hwmon.read();
    let check =
        |input: &str, min: Option<f64>, max: Option<f64>, crit: Option<f64>, alarm: bool| {
            let r = by_id(&readings, &format!("it8728.it87.2608/{input}"));
            assert_eq!(
                (r.min, r.max, r.crit, r.alarm),
                (min, max, crit, alarm),
                "{input}: {r:?}"
            );
        };
    check("temp1", None, Some(80.0), Some(100.0), false);
    check("temp2", None, Some(80.0), None, true);
    check("temp3", None, None, Some(100.0), true);
    check("temp4", None, None, None, true);
    check("temp5", None, None, None, true);
    check("temp6", None, None, None, false);
    check("in0", Some(1.15), Some(1.3), None, true);
    check("in1", Some(3.1), None, None, true);
    check("in2", None, None, None, false);
    check("fan1", Some(300.0), None, None, true);
    check("fan2", Some(0.0), None, None, false);
    check("power1", None, Some(120.0), None, true);
    assert!(
        readings.iter().all(|r| r.id != "it8728.it87.2608/fan3"),
        "{readings:#?}"
    );
    assert_eq!(readings.len(), 12);
    assert_eq!(hwmon.errors_total(), 0);

    // Alarm flags are live, not cached with the layout.
    write_attrs(&chip, &[("temp4_max_alarm", "0"), ("temp2_input", "70000")]);
    let readings = hwmon.read();
    assert!(!by_id(&readings, "it8728.it87.2608/temp4").alarm);
    let temp2 = by_id(&readings, "it8728.it87.2608/temp2");
    assert_eq!((temp2.value, temp2.alarm), (70.0, false));
}

/// Older kernels keep the name and attributes in `hwmonN/device/`.
#[test]
fn attributes_under_device() {
    let sys = Sys::new();
    let hwmon = sys.class().join("hwmon0");
    let device = sys.dir.path().join("sys/devices/platform/w83627hf.656");
    fs::create_dir_all(&hwmon).unwrap();
    fs::create_dir_all(&device).unwrap();
    symlink(&device, hwmon.join("device")).unwrap();
    write_attrs(
        &device,
        &[
            ("name", "w83627hf"),
            ("temp1_input", "36000"),
            ("temp1_max", "60000"),
            ("fan1_input", "2000"),
        ],
    );

    let readings = HwmonCollector::new(sys.roots()).read();
    let got: Vec<(&str, f64, Option<f64>)> = readings
        .iter()
        .map(|r| (r.id.as_str(), r.value, r.max))
        .collect();
    assert_eq!(
        got,
        [
            ("w83627hf.656/temp1", 36.0, Some(60.0)),
            ("w83627hf.656/fan1", 2000.0, None)
        ]
    );
}

#[test]
fn unreadable_inputs_are_counted_and_skipped() {
    let sys = Sys::new();
    let chip = sys.chip(
        0,
        "coretemp",
        Some("coretemp.0"),
        &[("temp1_input", "50000"), ("temp3_input", "N/A")],
    );
    // A directory where a file should be: opening works, reading fails (EISDIR).
    fs::create_dir(chip.join("temp2_input")).unwrap();

    let mut hwmon = HwmonCollector::new(sys.roots());
    let ids = |readings: Vec<SensorReading>| readings.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(hwmon.read()), ["coretemp.0/temp1"]);
    assert_eq!(hwmon.errors_total(), 2);
    assert_eq!(ids(hwmon.read()), ["coretemp.0/temp1"]);
    assert_eq!(hwmon.errors_total(), 4, "counted on every read");

    // An input that vanishes is counted once, then the rescan forgets it.
    fs::remove_file(chip.join("temp1_input")).unwrap();
    fs::write(chip.join("temp3_input"), "42000\n").unwrap();
    assert_eq!(ids(hwmon.read()), ["coretemp.0/temp3"]);
    assert_eq!(hwmon.errors_total(), 6);
    assert_eq!(ids(hwmon.read()), ["coretemp.0/temp3"]);
    assert_eq!(
        hwmon.errors_total(),
        7,
        "only the directory input still fails"
    );
}

#[test]
fn no_hwmon_class_is_no_readings() {
    let dir = tempfile::tempdir().unwrap();
    let mut hwmon = HwmonCollector::new(Roots::under(dir.path()));
    assert!(hwmon.read().is_empty());
    assert_eq!(hwmon.errors_total(), 0);
}

/// Whatever the host has (possibly nothing in a container), it reads without panicking and
/// with unique ids.
#[test]
fn this_host() {
    let mut hwmon = HwmonCollector::new(Roots::default());
    let readings = hwmon.read();
    let mut ids: Vec<&str> = readings.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), readings.len(), "{readings:#?}");
    assert!(readings.iter().all(|r| r.value.is_finite()));
}
