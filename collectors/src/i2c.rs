//! I2C sensors (LM75, TMP102, INA219): their register decoders, and the collector that polls
//! the configured devices.
//!
//! The decoders are pure and always compiled, so they are tested on any machine. The real bus
//! (rppal over `/dev/i2c-N`) is compiled only with the `i2c` feature; tests hand the collector
//! a fake [`I2cBus`].
//!
//! Readings: chip `i2c-<bus>-<addr>` (two lowercase hex digits, e.g. `i2c-1-48`), id
//! `<chip>/temp` for the thermometers and `<chip>/voltage`, `/current`, `/power` for an
//! INA219; the label is the configured one or the model name. The configured `min`/`max`/`crit`
//! apply to the model's primary quantity: the temperature, or an INA219's bus voltage (the
//! rail it watches). Current and power carry no limits.
//!
//! The INA219 is read without programming its calibration register, so the collector never
//! writes to a device: current is the shunt voltage over the configured shunt resistance
//! (default 0.1 Ω) and power is bus voltage × current, which is what the chip's own power
//! register would hold. Its math-overflow flag (OVF) sets the alarm on all three readings.

use crate::config::{I2cConfig, I2cModel, I2cSensorConfig};
use crate::model::{SensorKind, SensorReading, SensorSource};
use crate::CollectError;

/// Shunt resistance of the common INA219 breakout boards (R100).
pub const INA219_DEFAULT_SHUNT_OHMS: f64 = 0.1;

/// Register transfers on one I2C bus.
pub trait I2cBus: Send {
    /// Reads `buf.len()` bytes starting at register `reg` of the device at `address`.
    fn read_reg(&mut self, address: u16, reg: u8, buf: &mut [u8]) -> Result<(), String>;
    /// Writes `data` starting at register `reg` of the device at `address`.
    fn write_reg(&mut self, address: u16, reg: u8, data: &[u8]) -> Result<(), String>;
}

/// LM75/LM75A temperature register (0x00), in °C.
///
/// The LM75A holds 11 bits of two's complement in the top of the big-endian word, 0.125 °C per
/// LSB; the original LM75's 9 bits sit in the same place, so one decoder serves both.
pub fn lm75_celsius(raw: [u8; 2]) -> f64 {
    f64::from(i16::from_be_bytes(raw) >> 5) * 0.125
}

/// TMP102 temperature register (0x00), in °C: 12 bits of two's complement, 0.0625 °C per LSB.
///
/// Bit 0 is the EM flag: in extended mode the reading has 13 bits, to reach 150 °C.
pub fn tmp102_celsius(raw: [u8; 2]) -> f64 {
    let shift = if raw[1] & 1 == 1 { 3 } else { 4 };
    f64::from(i16::from_be_bytes(raw) >> shift) * 0.0625
}

/// The INA219 bus voltage register (0x02).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ina219Bus {
    pub volts: f64,
    /// CNVR: a conversion finished since the power or current register was last read.
    pub conversion_ready: bool,
    /// OVF: the chip's power or current calculation overflowed.
    pub overflow: bool,
}

/// Decodes the INA219 bus voltage register (0x02): bits 15..3 are the voltage, 4 mV per LSB.
pub fn ina219_bus(raw: [u8; 2]) -> Ina219Bus {
    let word = u16::from_be_bytes(raw);
    Ina219Bus {
        volts: f64::from(word >> 3) * 4.0 / 1e3,
        conversion_ready: word & 0b10 != 0,
        overflow: word & 0b01 != 0,
    }
}

/// INA219 shunt voltage register (0x01), in volts: signed, 10 µV per LSB. The sign bits the
/// chip extends for its smaller PGA ranges make this one decoder right for all of them.
pub fn ina219_shunt_volts(raw: [u8; 2]) -> f64 {
    f64::from(i16::from_be_bytes(raw)) / 1e5
}

/// Polls the configured I2C sensors.
pub struct I2cCollector {
    devices: Vec<Device>,
    buses: Vec<Box<dyn I2cBus>>,
    errors_total: u64,
}

impl std::fmt::Debug for I2cCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I2cCollector")
            .field("devices", &self.devices)
            .field("buses", &self.buses.len())
            .field("errors_total", &self.errors_total)
            .finish()
    }
}

#[derive(Debug)]
struct Device {
    config: I2cSensorConfig,
    /// Index into `I2cCollector::buses`.
    bus: usize,
    chip: String,
    label: String,
    /// Set while the device fails, so a failure is logged when it starts, not on every read.
    failing: bool,
}

const REG_TEMP: u8 = 0x00;
const REG_INA219_SHUNT: u8 = 0x01;
const REG_INA219_BUS: u8 = 0x02;

impl I2cCollector {
    /// Opens one bus per distinct bus number in `config` (`/dev/i2c-N`, feature `i2c`).
    ///
    /// With no sensors configured this is an empty collector on any build. With sensors
    /// configured, a build without the `i2c` feature returns [`CollectError::Unsupported`], and
    /// a sensor whose address or shunt cannot work, or a bus that cannot be opened, returns
    /// [`CollectError::I2c`].
    pub fn open(config: &I2cConfig) -> Result<Self, CollectError> {
        if config.sensors.is_empty() {
            return Ok(Self {
                devices: Vec::new(),
                buses: Vec::new(),
                errors_total: 0,
            });
        }
        validate(config)?;
        Self::open_buses(config)
    }

    #[cfg(feature = "i2c")]
    fn open_buses(config: &I2cConfig) -> Result<Self, CollectError> {
        let mut numbers: Vec<u8> = Vec::new();
        let mut buses: Vec<Box<dyn I2cBus>> = Vec::new();
        for sensor in &config.sensors {
            if numbers.contains(&sensor.bus) {
                continue;
            }
            let bus = rppal_bus::RppalBus::open(sensor.bus).map_err(|what| CollectError::I2c {
                bus: sensor.bus,
                address: sensor.address,
                what,
            })?;
            numbers.push(sensor.bus);
            buses.push(Box::new(bus));
        }
        let devices = config
            .sensors
            .iter()
            .map(|s| Device::new(s, numbers.iter().position(|&n| n == s.bus).unwrap_or(0)))
            .collect();
        Ok(Self {
            devices,
            buses,
            errors_total: 0,
        })
    }

    #[cfg(not(feature = "i2c"))]
    fn open_buses(config: &I2cConfig) -> Result<Self, CollectError> {
        Err(CollectError::Unsupported(format!(
            "{} I2C sensor(s) are configured but this gridmon was built without I2C support; \
             rebuild it with `cargo build --features i2c` or remove the [collect.i2c] sensors",
            config.sensors.len()
        )))
    }

    /// A collector whose every sensor is on `bus`, whatever bus number it is configured with
    /// (for tests, with a fake bus).
    pub fn with_bus(config: &I2cConfig, bus: Box<dyn I2cBus>) -> Self {
        let devices = config.sensors.iter().map(|s| Device::new(s, 0)).collect();
        Self {
            devices,
            buses: vec![bus],
            errors_total: 0,
        }
    }

    /// One round over the configured sensors, in config order. A device that fails is counted
    /// and skipped; the others are still read.
    pub fn read(&mut self) -> Vec<SensorReading> {
        let mut out = Vec::with_capacity(self.devices.len() * 3);
        for device in &mut self.devices {
            let result = match self.buses.get_mut(device.bus) {
                Some(bus) => device.sample(bus.as_mut(), &mut out),
                None => Err("no bus opened for this device".to_owned()),
            };
            match result {
                Ok(()) if device.failing => {
                    device.failing = false;
                    tracing::info!(chip = %device.chip, "i2c sensor answers again");
                }
                Ok(()) => {}
                Err(what) => {
                    self.errors_total += 1;
                    if !device.failing {
                        device.failing = true;
                        tracing::warn!(
                            chip = %device.chip,
                            error = %what,
                            "i2c sensor unreadable; further failures are only counted until it recovers",
                        );
                    }
                }
            }
        }
        out
    }

    /// Device reads that failed since start (cumulative; one per device per read).
    pub fn errors_total(&self) -> u64 {
        self.errors_total
    }
}

/// Rejects what could never be read, so the agent fails at start with the reason rather than
/// counting errors forever.
fn validate(config: &I2cConfig) -> Result<(), CollectError> {
    for (i, s) in config.sensors.iter().enumerate() {
        let fail = |what: &str| {
            Err(CollectError::I2c {
                bus: s.bus,
                address: s.address,
                what: what.to_owned(),
            })
        };
        // 0x78..=0x7f are reserved for 10-bit addressing, which the Pi's controller lacks.
        if s.address > 0x77 {
            return fail("not a 7-bit device address (0x03..=0x77)");
        }
        if s.shunt_ohms.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return fail("shunt_ohms must be a positive number of ohms");
        }
        // Two entries for one device would give two readings one id.
        if config.sensors[..i]
            .iter()
            .any(|o| (o.bus, o.address) == (s.bus, s.address))
        {
            return fail("configured twice");
        }
    }
    Ok(())
}

fn model_name(model: I2cModel) -> &'static str {
    match model {
        I2cModel::Lm75 => "LM75",
        I2cModel::Tmp102 => "TMP102",
        I2cModel::Ina219 => "INA219",
    }
}

impl Device {
    fn new(config: &I2cSensorConfig, bus: usize) -> Self {
        Self {
            chip: format!("i2c-{}-{:02x}", config.bus, config.address),
            label: config
                .label
                .clone()
                .unwrap_or_else(|| model_name(config.model).to_owned()),
            config: config.clone(),
            bus,
            failing: false,
        }
    }

    /// Reads the device and appends its readings; on error appends nothing.
    fn sample(&self, bus: &mut dyn I2cBus, out: &mut Vec<SensorReading>) -> Result<(), String> {
        let mut read = |reg: u8| {
            let mut buf = [0u8; 2];
            bus.read_reg(self.config.address, reg, &mut buf)
                .map(|()| buf)
                .map_err(|e| format!("register {reg:#04x}: {e}"))
        };
        match self.config.model {
            I2cModel::Lm75 => {
                out.push(self.reading(
                    "temp",
                    SensorKind::Temperature,
                    lm75_celsius(read(REG_TEMP)?),
                    true,
                    false,
                ));
            }
            I2cModel::Tmp102 => {
                out.push(self.reading(
                    "temp",
                    SensorKind::Temperature,
                    tmp102_celsius(read(REG_TEMP)?),
                    true,
                    false,
                ));
            }
            I2cModel::Ina219 => {
                let shunt_ohms = self.config.shunt_ohms.unwrap_or(INA219_DEFAULT_SHUNT_OHMS);
                if !(shunt_ohms.is_finite() && shunt_ohms > 0.0) {
                    return Err(format!(
                        "shunt_ohms {shunt_ohms} is not a positive resistance"
                    ));
                }
                let shunt = ina219_shunt_volts(read(REG_INA219_SHUNT)?);
                let bus_v = ina219_bus(read(REG_INA219_BUS)?);
                let amps = shunt / shunt_ohms;
                let ovf = bus_v.overflow;
                out.push(self.reading("voltage", SensorKind::Voltage, bus_v.volts, true, ovf));
                out.push(self.reading("current", SensorKind::Current, amps, false, ovf));
                out.push(self.reading("power", SensorKind::Power, bus_v.volts * amps, false, ovf));
            }
        }
        Ok(())
    }

    fn reading(
        &self,
        quantity: &str,
        kind: SensorKind,
        value: f64,
        limited: bool,
        chip_alarm: bool,
    ) -> SensorReading {
        let (min, max, crit) = if limited {
            (self.config.min, self.config.max, self.config.crit)
        } else {
            (None, None, None)
        };
        let beyond = min.is_some_and(|m| value < m)
            || max.is_some_and(|m| value > m)
            || crit.is_some_and(|c| value > c);
        SensorReading {
            id: format!("{}/{quantity}", self.chip),
            chip: self.chip.clone(),
            label: self.label.clone(),
            kind,
            source: SensorSource::I2c,
            value,
            min,
            max,
            crit,
            alarm: beyond || chip_alarm,
        }
    }
}

#[cfg(feature = "i2c")]
mod rppal_bus {
    //! The `/dev/i2c-N` bus through rppal.

    use rppal::i2c::I2c;

    use super::I2cBus;

    #[derive(Debug)]
    pub(super) struct RppalBus {
        i2c: I2c,
        /// The device the kernel is addressing now; set only when it changes, saving an
        /// ioctl per read on a bus with one device.
        selected: Option<u16>,
    }

    impl RppalBus {
        pub(super) fn open(bus: u8) -> Result<Self, String> {
            let i2c = I2c::with_bus(bus).map_err(|e| {
                format!("cannot open /dev/i2c-{bus}: {e} (is the bus enabled, and is the agent in the `i2c` group?)")
            })?;
            Ok(Self {
                i2c,
                selected: None,
            })
        }

        fn select(&mut self, address: u16) -> Result<(), String> {
            if self.selected != Some(address) {
                self.selected = None;
                self.i2c
                    .set_slave_address(address)
                    .map_err(|e| e.to_string())?;
                self.selected = Some(address);
            }
            Ok(())
        }
    }

    impl I2cBus for RppalBus {
        fn read_reg(&mut self, address: u16, reg: u8, buf: &mut [u8]) -> Result<(), String> {
            self.select(address)?;
            // Pointer write, repeated start, read: what the LM75, TMP102 and INA219 expect.
            self.i2c.write_read(&[reg], buf).map_err(|e| e.to_string())
        }

        fn write_reg(&mut self, address: u16, reg: u8, data: &[u8]) -> Result<(), String> {
            self.select(address)?;
            let mut frame = Vec::with_capacity(data.len() + 1);
            frame.push(reg);
            frame.extend_from_slice(data);
            let written = self.i2c.write(&frame).map_err(|e| e.to_string())?;
            if written != frame.len() {
                return Err(format!("short write: {written} of {} bytes", frame.len()));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn check(decode: fn([u8; 2]) -> f64, raw: [u8; 2], expected: f64) {
        let got = decode(raw);
        assert!(
            (got - expected).abs() < 1e-9,
            "{raw:02x?}: got {got}, expected {expected}"
        );
    }

    /// LM75A datasheet (NXP), table 10 "Temp register value".
    #[test]
    fn lm75_datasheet_values() {
        check(lm75_celsius, [0x7F, 0x00], 127.0);
        check(lm75_celsius, [0x7D, 0x00], 125.0);
        check(lm75_celsius, [0x19, 0x00], 25.0);
        check(lm75_celsius, [0x00, 0x20], 0.125);
        check(lm75_celsius, [0x00, 0x80], 0.5);
        check(lm75_celsius, [0x00, 0x00], 0.0);
        check(lm75_celsius, [0xFF, 0xE0], -0.125);
        check(lm75_celsius, [0xE7, 0x00], -25.0);
        check(lm75_celsius, [0xC9, 0x20], -54.875);
        check(lm75_celsius, [0xC9, 0x00], -55.0);
        // The undefined low bits of a 9-bit LM75 do not move the value.
        check(lm75_celsius, [0x19, 0x1F], 25.0);
    }

    /// TMP102 datasheet (TI), tables 5 and 6 (normal and extended format).
    #[test]
    fn tmp102_datasheet_values() {
        check(tmp102_celsius, [0x7F, 0xF0], 127.9375);
        check(tmp102_celsius, [0x64, 0x00], 100.0);
        check(tmp102_celsius, [0x19, 0x00], 25.0);
        check(tmp102_celsius, [0x00, 0x40], 0.25);
        check(tmp102_celsius, [0x00, 0x00], 0.0);
        check(tmp102_celsius, [0xFF, 0xC0], -0.25);
        check(tmp102_celsius, [0xE7, 0x00], -25.0);
        check(tmp102_celsius, [0xC9, 0x00], -55.0);
        // Extended mode (EM bit 0 set): 13 bits.
        check(tmp102_celsius, [0x4B, 0x01], 150.0);
        check(tmp102_celsius, [0x40, 0x01], 128.0);
        check(tmp102_celsius, [0x3F, 0xF9], 127.9375);
        check(tmp102_celsius, [0x0C, 0x81], 25.0);
        check(tmp102_celsius, [0x00, 0x09], 0.0625);
        check(tmp102_celsius, [0xE4, 0x81], -55.0);
    }

    /// INA219 datasheet (TI), section 8.6.3: shunt register for each PGA range, bus register.
    #[test]
    fn ina219_datasheet_values() {
        check(ina219_shunt_volts, [0x7D, 0x00], 0.320);
        check(ina219_shunt_volts, [0x83, 0x00], -0.320);
        check(ina219_shunt_volts, [0x0F, 0xA0], 0.040);
        check(ina219_shunt_volts, [0xF0, 0x60], -0.040);
        check(ina219_shunt_volts, [0x00, 0x01], 0.000_01);
        check(ina219_shunt_volts, [0xFF, 0xFF], -0.000_01);

        check(|raw| ina219_bus(raw).volts, [0x5D, 0xC0], 12.0);
        check(|raw| ina219_bus(raw).volts, [0xFA, 0x00], 32.0);
        check(|raw| ina219_bus(raw).volts, [0x00, 0x08], 0.004);
        let flags = ina219_bus([0x5D, 0xC3]);
        assert_eq!(
            flags,
            Ina219Bus {
                volts: 12.0,
                conversion_ready: true,
                overflow: true
            }
        );
        let clear = ina219_bus([0x5D, 0xC0]);
        assert!(!clear.conversion_ready && !clear.overflow);
    }

    proptest! {
        #[test]
        fn decoders_stay_in_the_chips_range(raw: [u8; 2]) {
            let t = lm75_celsius(raw);
            prop_assert!((-128.0..128.0).contains(&t));
            let t = tmp102_celsius(raw);
            prop_assert!((-256.0..256.0).contains(&t));
            let v = ina219_bus(raw).volts;
            prop_assert!((0.0..=32.764).contains(&v));
            let v = ina219_shunt_volts(raw);
            prop_assert!((-0.32768..=0.32767).contains(&v));
        }
    }
}
