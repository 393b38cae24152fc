//! Benchmark of the agent's once-a-second collection cycle on this host: host metrics, hwmon
//! and the process table, each measured alone and then together.
//!
//! ```text
//! cargo run --release -p gridmon-collectors --example collect_cycle -- [--spawn N] [--secs S]
//! ```
//!
//! `--spawn N` starts N `sleep` children first so the process table has a realistic size;
//! `--secs S` is the number of cycles per measurement (default 200), each standing for one
//! second of the agent's life. The cycles run back to back, so caches are warmer than at 1 Hz
//! and the figures are a lower bound on the real cost per cycle.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use gridmon_collectors::config::{ProcessConfig, ProcessSelect};
use gridmon_collectors::host::HostCollector;
use gridmon_collectors::hwmon::HwmonCollector;
use gridmon_collectors::process::ProcessCollector;
use gridmon_collectors::Roots;

fn main() {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}\nusage: collect_cycle [--spawn N] [--secs S]");
            std::process::exit(2);
        }
    };
    let children = match Children::spawn(args.spawn) {
        Ok(children) => children,
        Err(err) => {
            eprintln!("cannot start `sleep` children: {err}");
            std::process::exit(1);
        }
    };

    let roots = Roots::default();
    // The first sample opens every file and reads every cmdline; later ones reuse what they can.
    let cold = |config: &ProcessConfig| {
        let mut c = ProcessCollector::new(roots.clone(), config.clone());
        measure(1, || drop(c.sample()))
    };
    let top = ProcessConfig {
        select: ProcessSelect::Top,
        ..ProcessConfig::default()
    };
    let all = ProcessConfig {
        select: ProcessSelect::All,
        ..ProcessConfig::default()
    };
    let mut host = HostCollector::new(roots.clone());
    let mut hwmon = HwmonCollector::new(roots.clone());
    let mut procs_all = ProcessCollector::new(roots.clone(), all.clone());
    let mut procs_top = ProcessCollector::new(roots.clone(), top.clone());

    let sensors = hwmon.read().len();
    let table = procs_all.sample().unwrap_or_default();
    let top_rows = procs_top.sample().map(|t| t.rows.len()).unwrap_or(0);
    println!(
        "collect_cycle: {} cycles per line; {} processes seen ({} spawned), {} hwmon sensors, \
         open-files soft limit {}",
        args.cycles,
        table.total,
        args.spawn,
        sensors,
        open_files_limit()
    );
    println!(
        "{:<44} {:>10} {:>10} {:>11} {:>13}",
        "phase", "wall mean", "wall p99", "CPU/cycle", "core at 1 Hz"
    );

    report("processes, select=all, first sample", cold(&all));
    report("processes, select=top, first sample", cold(&top));
    let n = args.cycles;
    report("host", measure(n, || drop(host.sample())));
    report(
        &format!("hwmon ({sensors} sensors)"),
        measure(n, || drop(hwmon.read())),
    );
    report(
        &format!("processes, select=all ({} rows)", table.rows.len()),
        measure(n, || drop(procs_all.sample())),
    );
    report(
        &format!(
            "processes, select=top, top_n={} ({top_rows} rows)",
            top.top_n
        ),
        measure(n, || drop(procs_top.sample())),
    );
    report(
        "full cycle: host + hwmon + processes (all)",
        measure(n, || {
            drop(host.sample());
            drop(hwmon.read());
            drop(procs_all.sample());
        }),
    );
    report(
        "full cycle: host + hwmon + processes (top)",
        measure(n, || {
            drop(host.sample());
            drop(hwmon.read());
            drop(procs_top.sample());
        }),
    );
    drop(children);
}

struct Args {
    spawn: usize,
    cycles: usize,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut parsed = Self {
            spawn: 0,
            cycles: 200,
        };
        while let Some(flag) = args.next() {
            let slot = match flag.as_str() {
                "--spawn" => &mut parsed.spawn,
                "--secs" => &mut parsed.cycles,
                other => return Err(format!("unknown argument {other:?}")),
            };
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a number"))?;
            *slot = value
                .parse()
                .map_err(|_| format!("{flag}: not a number: {value:?}"))?;
        }
        parsed.cycles = parsed.cycles.max(1);
        Ok(parsed)
    }
}

struct Figures {
    wall: Vec<Duration>,
    cpu_per_cycle: Duration,
}

fn measure(cycles: usize, mut cycle: impl FnMut()) -> Figures {
    let mut wall = Vec::with_capacity(cycles);
    let cpu_before = cpu_time();
    for _ in 0..cycles {
        let start = Instant::now();
        cycle();
        wall.push(start.elapsed());
    }
    let cpu = cpu_time().saturating_sub(cpu_before);
    Figures {
        wall,
        cpu_per_cycle: cpu / u32::try_from(cycles).unwrap_or(u32::MAX),
    }
}

fn report(phase: &str, mut f: Figures) {
    f.wall.sort_unstable();
    let n = f.wall.len();
    let mean = f.wall.iter().sum::<Duration>() / u32::try_from(n).unwrap_or(u32::MAX);
    let p99 = f.wall[(n * 99 / 100).min(n - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // At one cycle per second, CPU ms per cycle / 1000 ms is the share of one core.
    let core_pct = ms(f.cpu_per_cycle) / 1000.0 * 100.0;
    println!(
        "{phase:<44} {:>7.3} ms {:>7.3} ms {:>8.3} ms {:>11.3} %",
        ms(mean),
        ms(p99),
        ms(f.cpu_per_cycle),
        core_pct
    );
}

/// The soft limit on open files, which bounds how many /proc files the process collector keeps
/// open between samples.
fn open_files_limit() -> String {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("?")
        .to_owned()
}

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: `usage` is writable memory of the size getrusage fills, read only on success.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return Duration::ZERO;
        }
        usage.assume_init()
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// `sleep` children, killed and reaped on drop.
///
/// They stay in the benchmark's process group, unlike the agent's supervised children
/// (`gridmon_commands::child::command`): a Ctrl-C in the terminal then ends them too, and the
/// collectors crate does not depend on the commands crate.
struct Children(Vec<Child>);

impl Children {
    #[allow(clippy::disallowed_methods)] // see the type's comment
    fn spawn(n: usize) -> std::io::Result<Self> {
        let mut children = Self(Vec::with_capacity(n));
        for _ in 0..n {
            let child = std::process::Command::new("sleep")
                .arg("3600")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()?;
            children.0.push(child);
        }
        Ok(children)
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}
