//! Collector settings as they appear in the `[collect]` sections of the agent's config file.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which processes go into the process table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessSelect {
    /// Every process.
    #[default]
    All,
    /// The `top_n` by CPU, the `top_n` by memory (RSS), and every process matching `patterns`.
    Top,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessConfig {
    pub enabled: bool,
    pub select: ProcessSelect,
    pub top_n: usize,
    /// Glob patterns (`*`, `?`) matched against the process name and against the first
    /// cmdline argument; a match is always included when `select = "top"`.
    pub patterns: Vec<String>,
    /// The cmdline is cut at this many bytes (on a character boundary).
    pub cmdline_max: usize,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            select: ProcessSelect::All,
            top_n: 20,
            patterns: Vec::new(),
            cmdline_max: 256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HwmonConfig {
    pub enabled: bool,
}

impl Default for HwmonConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Supported I2C sensor models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum I2cModel {
    /// LM75 / LM75A temperature sensor (11-bit, 0.125 °C).
    Lm75,
    /// TI TMP102 temperature sensor (12-bit, 0.0625 °C).
    Tmp102,
    /// TI INA219 bus voltage / shunt current / power monitor.
    Ina219,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct I2cSensorConfig {
    /// I2C bus number (`/dev/i2c-<bus>`).
    pub bus: u8,
    /// 7-bit device address, e.g. `0x48`.
    pub address: u16,
    pub model: I2cModel,
    /// Shown as the reading's label; defaults to the model name.
    #[serde(default)]
    pub label: Option<String>,
    /// INA219 only: shunt resistance in ohms (default 0.1).
    #[serde(default)]
    pub shunt_ohms: Option<f64>,
    /// Limits applied to the reading(s) for the alarm flag.
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub crit: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct I2cConfig {
    pub sensors: Vec<I2cSensorConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// `host:port` targets reached by TCP connect once per attempt.
    pub targets: Vec<String>,
    /// Connect attempts per target per interval.
    pub attempts: u32,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            attempts: 3,
            timeout: Duration::from_millis(500),
        }
    }
}
