//! The hardware sensors of one simulated node: coretemp, an NVMe drive, fans and voltages, as
//! the hwmon collector reports them.

use gridmon_nats::wire::{SensorKind, SensorReading, SensorSource};

use super::rng::Rng;

/// The limits of the simulated sensors (what the fault flags push them across).
pub const CORE_TEMP_MAX: f64 = 80.0;
pub const CORE_TEMP_CRIT: f64 = 100.0;
pub const CPU_FAN_MIN: f64 = 600.0;
pub const CHASSIS_FAN_MIN: f64 = 300.0;

/// Where each sensor sits in the report's `sensors`.
#[derive(Debug, Clone, Copy)]
struct SensorSlots {
    core_temps: usize,
    nvme: usize,
    cpu_fan: usize,
    chassis_fan: usize,
    v12: usize,
    v5: usize,
}

/// The static part of one node's sensors.
#[derive(Debug, Clone)]
pub struct SensorSim {
    slots: SensorSlots,
    temp_offsets: Vec<f64>,
    v12_offset: f64,
    v5_offset: f64,
}

/// The sensors of a typical server: `n_temps` coretemp inputs, an NVMe drive, two fans, two
/// voltages.
fn layout(n_temps: usize) -> (Vec<SensorReading>, SensorSlots) {
    let reading = |chip: &str, input: &str, label: &str, kind: SensorKind| SensorReading {
        id: format!("{chip}/{input}"),
        chip: chip.into(),
        label: label.into(),
        kind,
        source: SensorSource::Hwmon,
        ..Default::default()
    };
    let mut v = Vec::with_capacity(n_temps + 5);
    for i in 0..n_temps {
        let label = if i == 0 {
            "Package id 0".to_string()
        } else {
            format!("Core {}", i - 1)
        };
        v.push(SensorReading {
            max: Some(CORE_TEMP_MAX),
            crit: Some(CORE_TEMP_CRIT),
            ..reading(
                "coretemp.0",
                &format!("temp{}", i + 1),
                &label,
                SensorKind::Temperature,
            )
        });
    }
    let nvme = v.len();
    v.push(SensorReading {
        min: Some(-273.15),
        max: Some(81.85),
        crit: Some(84.85),
        ..reading("nvme0", "temp1", "Composite", SensorKind::Temperature)
    });
    let cpu_fan = v.len();
    v.push(SensorReading {
        min: Some(CPU_FAN_MIN),
        ..reading("nct6775.656", "fan1", "CPU Fan", SensorKind::Fan)
    });
    let chassis_fan = v.len();
    v.push(SensorReading {
        min: Some(CHASSIS_FAN_MIN),
        ..reading("nct6775.656", "fan2", "Chassis Fan 1", SensorKind::Fan)
    });
    let v12 = v.len();
    v.push(SensorReading {
        min: Some(11.4),
        max: Some(12.6),
        ..reading("nct6775.656", "in1", "+12V", SensorKind::Voltage)
    });
    let v5 = v.len();
    v.push(SensorReading {
        min: Some(4.75),
        max: Some(5.25),
        ..reading("nct6775.656", "in2", "+5V", SensorKind::Voltage)
    });
    let slots = SensorSlots {
        core_temps: n_temps,
        nvme,
        cpu_fan,
        chassis_fan,
        v12,
        v5,
    };
    (v, slots)
}

impl SensorSim {
    /// A node's sensors with their per-node offsets drawn from `rng`.
    pub fn new(rng: &mut Rng) -> (Self, Vec<SensorReading>) {
        let n_temps = 2 + rng.below(3) as usize;
        let (readings, slots) = layout(n_temps);
        let sim = Self {
            slots,
            temp_offsets: (0..n_temps).map(|_| rng.range(0.0, 4.0)).collect(),
            v12_offset: rng.range(-0.15, 0.15),
            v5_offset: rng.range(-0.06, 0.06),
        };
        (sim, readings)
    }

    /// New values for the node's CPU and disk levels, with the faults that are active.
    pub fn update(
        &self,
        s: &mut [SensorReading],
        rng: &mut Rng,
        cpu: f64,
        disk_busy: f64,
        overheat: bool,
        fan_stop: bool,
    ) {
        let slots = self.slots;
        let mut set = |i: usize, v: f64| {
            if let Some(r) = s.get_mut(i) {
                r.value = v;
                r.alarm = beyond_limits(r);
            }
        };
        for i in 0..slots.core_temps {
            let off = self.temp_offsets.get(i).copied().unwrap_or(0.0);
            let v = if overheat && i == 0 {
                CORE_TEMP_CRIT + rng.range(0.0, 4.0)
            } else {
                (30.0 + 0.4 * cpu + off + rng.noise()).clamp(20.0, CORE_TEMP_MAX - 2.0)
            };
            set(i, v.round());
        }
        let nvme = 32.85 + 0.1 * cpu + 0.08 * disk_busy + 0.5 * rng.noise();
        set(slots.nvme, (nvme * 10.0).round() / 10.0);
        let cpu_fan = if fan_stop {
            0.0
        } else {
            (900.0 + 11.0 * cpu + 25.0 * rng.noise()).round()
        };
        set(slots.cpu_fan, cpu_fan);
        set(
            slots.chassis_fan,
            (650.0 + 3.0 * cpu + 15.0 * rng.noise()).round(),
        );
        let v12 = 12.0 + self.v12_offset + 0.024 * rng.noise();
        set(slots.v12, (v12 * 1000.0).round() / 1000.0);
        let v5 = 5.0 + self.v5_offset + 0.012 * rng.noise();
        set(slots.v5, (v5 * 1000.0).round() / 1000.0);
    }
}

/// What a chip's alarm flag would say: beyond min, max or crit, or a fan standing that should spin.
fn beyond_limits(r: &SensorReading) -> bool {
    let v = r.value;
    r.min.is_some_and(|m| v < m)
        || r.max.is_some_and(|m| v > m)
        || r.crit.is_some_and(|c| v >= c)
        || (r.kind == SensorKind::Fan && v == 0.0 && r.min.is_some_and(|m| m > 0.0))
}
