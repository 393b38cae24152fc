//! I2C collector over a fake bus: readings, limits, failing devices, and `open` per build.

#![allow(clippy::unwrap_used)] // a panic is how a test reports

mod fixtures;

use fixtures::by_id;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use gridmon_collectors::config::{I2cConfig, I2cModel, I2cSensorConfig};
use gridmon_collectors::i2c::{I2cBus, I2cCollector};
use gridmon_collectors::model::{SensorKind, SensorReading, SensorSource};
use gridmon_collectors::CollectError;

/// Register contents by (address, register); reads of `failing` addresses fail as a NACK
/// would. Shared so a test can change values between reads.
#[derive(Debug, Default, Clone)]
struct FakeBus(Arc<Mutex<FakeState>>);

#[derive(Debug, Default)]
struct FakeState {
    regs: HashMap<(u16, u8), Vec<u8>>,
    failing: HashSet<u16>,
    writes: usize,
}

impl FakeBus {
    fn set(&self, address: u16, reg: u8, bytes: &[u8]) -> &Self {
        self.0
            .lock()
            .unwrap()
            .regs
            .insert((address, reg), bytes.to_vec());
        self
    }

    fn fail(&self, address: u16, failing: bool) {
        let mut state = self.0.lock().unwrap();
        if failing {
            state.failing.insert(address);
        } else {
            state.failing.remove(&address);
        }
    }
}

impl I2cBus for FakeBus {
    fn read_reg(&mut self, address: u16, reg: u8, buf: &mut [u8]) -> Result<(), String> {
        let state = self.0.lock().unwrap();
        if state.failing.contains(&address) {
            return Err("Remote I/O error (os error 121)".into());
        }
        let bytes = state
            .regs
            .get(&(address, reg))
            .ok_or_else(|| format!("no register {reg:#04x}"))?;
        if bytes.len() != buf.len() {
            return Err(format!(
                "register {reg:#04x} holds {} bytes, {} asked",
                bytes.len(),
                buf.len()
            ));
        }
        buf.copy_from_slice(bytes);
        Ok(())
    }

    fn write_reg(&mut self, _address: u16, _reg: u8, _data: &[u8]) -> Result<(), String> {
        self.0.lock().unwrap().writes += 1;
        Ok(())
    }
}

fn sensor(bus: u8, address: u16, model: I2cModel) -> I2cSensorConfig {
    I2cSensorConfig {
        bus,
        address,
        model,
        label: None,
        shunt_ohms: None,
        min: None,
        max: None,
        crit: None,
    }
}

fn collector(sensors: Vec<I2cSensorConfig>, bus: &FakeBus) -> I2cCollector {
    I2cCollector::with_bus(&I2cConfig { sensors }, Box::new(bus.clone()))
}

#[test]
fn thermometers() {
    let bus = FakeBus::default();
    bus.set(0x48, 0x00, &[0x19, 0x80])
        .set(0x4a, 0x00, &[0xE7, 0x00]);
    let mut tmp102 = sensor(1, 0x4a, I2cModel::Tmp102);
    tmp102.label = Some("inlet".into());
    let mut i2c = collector(vec![sensor(1, 0x48, I2cModel::Lm75), tmp102], &bus);

    let readings = i2c.read();
    assert_eq!(
        readings,
        [
            SensorReading {
                id: "i2c-1-48/temp".into(),
                chip: "i2c-1-48".into(),
                label: "LM75".into(),
                kind: SensorKind::Temperature,
                source: SensorSource::I2c,
                value: 25.5,
                min: None,
                max: None,
                crit: None,
                alarm: false,
            },
            SensorReading {
                id: "i2c-1-4a/temp".into(),
                chip: "i2c-1-4a".into(),
                label: "inlet".into(),
                kind: SensorKind::Temperature,
                source: SensorSource::I2c,
                value: -25.0,
                min: None,
                max: None,
                crit: None,
                alarm: false,
            },
        ]
    );
    assert_eq!(i2c.errors_total(), 0);
}

#[test]
fn configured_limits_raise_the_alarm() {
    let bus = FakeBus::default();
    bus.set(0x48, 0x00, &[0x19, 0x00]);
    let mut lm75 = sensor(3, 0x48, I2cModel::Lm75);
    (lm75.min, lm75.max, lm75.crit) = (Some(5.0), Some(30.0), Some(45.0));
    let mut i2c = collector(vec![lm75], &bus);

    let check = |i2c: &mut I2cCollector, raw: [u8; 2], value: f64, alarm: bool| {
        bus.set(0x48, 0x00, &raw);
        let readings = i2c.read();
        let r = by_id(&readings, "i2c-3-48/temp");
        assert_eq!(
            (r.value, r.min, r.max, r.crit, r.alarm),
            (value, Some(5.0), Some(30.0), Some(45.0), alarm)
        );
    };
    check(&mut i2c, [0x19, 0x00], 25.0, false);
    check(&mut i2c, [0x1F, 0x00], 31.0, true);
    check(&mut i2c, [0x2E, 0x00], 46.0, true);
    check(&mut i2c, [0x04, 0x00], 4.0, true);
}

#[test]
fn ina219_voltage_current_power() {
    let bus = FakeBus::default();
    // 40 mV across the shunt; 12 V on the bus with CNVR set.
    bus.set(0x40, 0x01, &[0x0F, 0xA0])
        .set(0x40, 0x02, &[0x5D, 0xC2]);
    bus.set(0x41, 0x01, &[0xF0, 0x60])
        .set(0x41, 0x02, &[0x28, 0x00]);
    let mut rail = sensor(1, 0x40, I2cModel::Ina219);
    (rail.label, rail.min, rail.max) = (Some("12V rail".into()), Some(11.4), Some(12.6));
    let mut low_shunt = sensor(1, 0x41, I2cModel::Ina219);
    low_shunt.shunt_ohms = Some(0.01);
    let mut i2c = collector(vec![rail, low_shunt], &bus);

    let readings = i2c.read();
    type Row<'a> = (&'a str, SensorKind, f64, Option<f64>, bool);
    let got: Vec<Row> = readings
        .iter()
        .map(|r| {
            (
                r.id.as_str(),
                r.kind,
                (r.value * 1e6).round() / 1e6,
                r.max,
                r.alarm,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "i2c-1-40/voltage",
                SensorKind::Voltage,
                12.0,
                Some(12.6),
                false
            ),
            ("i2c-1-40/current", SensorKind::Current, 0.4, None, false),
            ("i2c-1-40/power", SensorKind::Power, 4.8, None, false),
            // 5.12 V, -40 mV over 0.01 Ω: a reverse current.
            ("i2c-1-41/voltage", SensorKind::Voltage, 5.12, None, false),
            ("i2c-1-41/current", SensorKind::Current, -4.0, None, false),
            ("i2c-1-41/power", SensorKind::Power, -20.48, None, false),
        ]
    );
    let labels: Vec<&str> = readings.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(
        labels,
        ["12V rail", "12V rail", "12V rail", "INA219", "INA219", "INA219"]
    );
    assert!(readings
        .iter()
        .all(|r| r.chip.starts_with("i2c-1-4") && r.source == SensorSource::I2c));
    assert_eq!(
        bus.0.lock().unwrap().writes,
        0,
        "the INA219 is read without calibrating it"
    );

    let ina_alarms = |readings: Vec<SensorReading>| -> Vec<bool> {
        readings
            .iter()
            .filter(|r| r.chip == "i2c-1-40")
            .map(|r| r.alarm)
            .collect()
    };
    // The chip's overflow flag marks all three readings.
    bus.set(0x40, 0x02, &[0x5D, 0xC1]);
    let alarms = ina_alarms(i2c.read());
    assert_eq!(alarms, [true, true, true]);
    // An out-of-window voltage alarms the voltage reading only.
    bus.set(0x40, 0x02, &[0x55, 0xF0]);
    let alarms = ina_alarms(i2c.read());
    assert_eq!(alarms, [true, false, false]);
}

#[test]
fn failing_devices_are_counted_and_skipped() {
    let bus = FakeBus::default();
    bus.set(0x48, 0x00, &[0x19, 0x00]);
    bus.set(0x40, 0x01, &[0x00, 0x00]); // bus voltage register missing: a half-read INA219
    let mut i2c = collector(
        vec![
            sensor(1, 0x4f, I2cModel::Lm75),
            sensor(1, 0x48, I2cModel::Lm75),
            sensor(1, 0x40, I2cModel::Ina219),
        ],
        &bus,
    );
    bus.fail(0x4f, true);

    let ids = |readings: Vec<SensorReading>| readings.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(i2c.read()), ["i2c-1-48/temp"]);
    assert_eq!(i2c.errors_total(), 2);
    assert_eq!(ids(i2c.read()), ["i2c-1-48/temp"]);
    assert_eq!(i2c.errors_total(), 4);

    bus.fail(0x4f, false);
    bus.set(0x4f, 0x00, &[0x20, 0x00])
        .set(0x40, 0x02, &[0x28, 0x00]);
    assert_eq!(
        ids(i2c.read()),
        [
            "i2c-1-4f/temp",
            "i2c-1-48/temp",
            "i2c-1-40/voltage",
            "i2c-1-40/current",
            "i2c-1-40/power"
        ]
    );
    assert_eq!(i2c.errors_total(), 4);
}

#[test]
fn bad_shunt_is_counted() {
    let bus = FakeBus::default();
    bus.set(0x40, 0x01, &[0x0F, 0xA0])
        .set(0x40, 0x02, &[0x5D, 0xC0]);
    let mut ina = sensor(1, 0x40, I2cModel::Ina219);
    ina.shunt_ohms = Some(0.0);
    let mut i2c = collector(vec![ina], &bus);
    assert!(i2c.read().is_empty());
    assert_eq!(i2c.errors_total(), 1);
}

#[test]
fn nothing_configured_opens_on_any_build() {
    let mut i2c = I2cCollector::open(&I2cConfig::default()).unwrap();
    assert!(i2c.read().is_empty());
    assert_eq!(i2c.errors_total(), 0);
}

#[test]
fn open_rejects_impossible_sensors() {
    fn check(sensors: Vec<I2cSensorConfig>, what: &str) {
        let config = I2cConfig { sensors };
        match I2cCollector::open(&config) {
            Err(e @ CollectError::I2c { .. }) => assert!(e.to_string().contains(what), "{e}"),
            other => panic!("expected an I2c error naming {what:?}, got {other:?}"),
        }
    }
    check(vec![sensor(1, 0x78, I2cModel::Lm75)], "7-bit");
    let mut ina = sensor(1, 0x40, I2cModel::Ina219);
    ina.shunt_ohms = Some(-0.1);
    check(vec![ina], "shunt_ohms");
    let lm75 = sensor(1, 0x48, I2cModel::Lm75);
    check(
        vec![lm75.clone(), sensor(2, 0x48, I2cModel::Lm75), lm75],
        "twice",
    );
}

#[cfg(not(feature = "i2c"))]
#[test]
fn open_without_the_feature_names_it() {
    let config = I2cConfig {
        sensors: vec![sensor(1, 0x48, I2cModel::Lm75)],
    };
    match I2cCollector::open(&config) {
        Err(e @ CollectError::Unsupported(_)) => {
            assert!(e.to_string().contains("cargo build --features i2c"), "{e}")
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

/// No machine has bus 250, so opening it must fail with the device path in the message.
#[cfg(feature = "i2c")]
#[test]
fn open_with_the_feature_reports_a_missing_bus() {
    let config = I2cConfig {
        sensors: vec![sensor(250, 0x48, I2cModel::Lm75)],
    };
    match I2cCollector::open(&config) {
        Err(
            e @ CollectError::I2c {
                bus: 250,
                address: 0x48,
                ..
            },
        ) => {
            assert!(e.to_string().contains("/dev/i2c-250"), "{e}")
        }
        other => panic!("expected an I2c error, got {other:?}"),
    }
}
