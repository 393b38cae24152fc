//! The process table: a cheap sweep of `/proc/<pid>/stat` over every process, then the
//! expensive reads (cmdline, fd count, I/O, owner) for the selected rows only.
//!
//! Processes come and go while they are read; one that exits mid-read is skipped and counted,
//! never logged one by one, and a file the agent may not read leaves its field empty.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::{ProcessConfig, ProcessSelect};
use crate::model::{ProcState, ProcessRow, ProcessTable, StateCounts};
use crate::procfs::{
    self, fields, keyed_u64, lines, parse_f64, parse_i64, parse_u64, Fault, PathBuffer, ReadBuf,
};
use crate::{CollectError, Roots};

/// How much of a cmdline is read to find `argv[0]` for pattern matching.
const ARGV0_READ_MAX: usize = 4096;

/// A process's cmdline and owner are read again every this many samples (and at once after an
/// exec): they rarely change, and reading them is most of the cost of a row.
const IDENT_REFRESH_SAMPLES: u64 = 10;

/// At most this share of the open-file limit is spent on per-process files kept open.
const KEPT_FILES_SHARE_OF_LIMIT: u64 = 4;
const KEPT_FILES_MAX: u64 = 16_384;

/// Reads the process table; keep one per host and call [`ProcessCollector::sample`] once per
/// interval.
#[derive(Debug)]
pub struct ProcessCollector {
    roots: Roots,
    config: ProcessConfig,
    /// `sysconf(_SC_CLK_TCK)`: the unit of the CPU times in `stat`.
    clk_tck: f64,
    page_size: u64,
    /// Linux 6.2 and later report the number of open fds as the size of `/proc/<pid>/fd`, which
    /// saves listing it; only trusted when the proc root is a real procfs.
    fd_count_from_size: bool,
    /// `btime` from `/proc/stat`, read once: it only moves when the wall clock is stepped, and a
    /// process's start time should not move with it.
    boot_time_ms: Option<i64>,
    last: Option<LastSample>,
    generation: u64,
    buf: ReadBuf,
    path: PathBuffer,
    kept: KeptFiles,
    /// The current sweep; its capacity is kept between samples.
    procs: Vec<Proc>,
    order: Vec<usize>,
    history: HashMap<ProcKey, History>,
    users: UserNames,
    vanished_total: u64,
    denied_total: u64,
}

/// A process is its pid and its start time: a pid reused by a new process is another key.
type ProcKey = (u32, u64);

#[derive(Debug, Clone, Copy)]
struct LastSample {
    at: Instant,
    uptime_s: Option<f64>,
}

/// What is remembered of a process between samples.
#[derive(Debug)]
struct History {
    ticks: u64,
    /// `(read_bytes, write_bytes)` when the process was last enriched.
    io: Option<(u64, u64)>,
    generation: u64,
    /// Whether the process matches the configured patterns, for the comm it had then (exec
    /// changes comm but keeps pid and start time).
    pattern_match: Option<(u64, bool)>,
    ident: Option<Ident>,
}

/// The slowly changing part of a row, cached between samples.
#[derive(Debug, Clone)]
struct Ident {
    cmdline: String,
    uid: Option<u32>,
    /// Reading `io` or `fd` was refused: not tried again before the next refresh, since only a
    /// change of owner (which a refresh notices) would change the answer.
    io_denied: bool,
    fds_denied: bool,
    /// The comm fingerprint it was read under: a new one means an exec.
    fingerprint: u64,
    /// The generation from which it is read again.
    refresh_at: u64,
}

/// One process of the current sweep: what `/proc/<pid>/stat` says, without allocation.
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    ppid: u32,
    comm: Comm,
    state: u8,
    ticks: u64,
    starttime: u64,
    priority: i32,
    nice: i32,
    threads: u32,
    vsz_bytes: u64,
    rss_bytes: u64,
    cpu_pct: f32,
    /// No earlier sample saw this process, but it started after the previous sample: all of its
    /// CPU time and I/O falls into the current interval.
    new_since_last: bool,
    selected: bool,
}

impl Proc {
    fn key(&self) -> ProcKey {
        (self.pid, self.starttime)
    }
}

/// `comm` kept inline. The kernel's limit is 15 bytes, but kernel workers show their
/// workqueue too (`kworker/0:1-events`), up to 63 bytes.
#[derive(Clone, Copy)]
struct Comm {
    bytes: [u8; 64],
    len: u8,
}

impl Comm {
    fn new(s: &[u8]) -> Self {
        let mut bytes = [0; 64];
        let len = s.len().min(bytes.len());
        bytes[..len].copy_from_slice(&s[..len]);
        Self {
            bytes,
            len: len as u8,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// A cheap fingerprint (FNV-1a), to notice an exec without keeping the old name.
    fn fingerprint(&self) -> u64 {
        self.as_bytes().iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// The per-sample counts behind `vanished_total` and `denied_total`.
#[derive(Debug, Default)]
struct Faults {
    vanished: u64,
    denied: u64,
    other: u64,
}

/// The process exited while it was being read.
#[derive(Debug)]
struct Gone;

impl Faults {
    /// Sorts the outcome of reading an optional file: a process that has gone is [`Gone`];
    /// otherwise the value, or the fault (permission denied, or anything else), counted.
    fn optional<T>(&mut self, res: io::Result<T>) -> Result<Result<T, Fault>, Gone> {
        let fault = match res {
            Ok(v) => return Ok(Ok(v)),
            Err(err) => Fault::of(&err),
        };
        match fault {
            Fault::Vanished => return Err(Gone),
            Fault::Denied => self.denied += 1,
            Fault::Other => self.other += 1,
        }
        Ok(Err(fault))
    }
}

/// Which per-process file [`KeptFiles`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    Stat,
    Io,
}

impl Kept {
    fn name(self) -> &'static str {
        match self {
            Self::Stat => "stat",
            Self::Io => "io",
        }
    }
}

/// Per-process procfs files kept open between samples: reading an open file again (`pread`)
/// costs about half of opening, reading and closing it, and the sweep is mostly that.
///
/// Such a file stays bound to the process it was opened on: once that process has exited,
/// reading gives ESRCH, even if its pid has been reused, so a reused pid cannot be misread.
#[derive(Debug, Default)]
struct KeptFiles {
    by_pid: HashMap<u32, KeptPair>,
    open: usize,
    /// A share of the open-file limit; more processes than that are read by opening each time.
    max: usize,
}

#[derive(Debug)]
struct KeptPair {
    stat: Option<File>,
    io: Option<File>,
    generation: u64,
}

impl KeptFiles {
    /// Reads `<proc>/<pid>/<which>` into `buf`, through the file kept open when there is one.
    fn read(
        &mut self,
        which: Kept,
        pid: u32,
        generation: u64,
        path: &mut PathBuffer,
        proc_root: &std::path::Path,
        buf: &mut ReadBuf,
    ) -> io::Result<()> {
        if let Some(pair) = self.by_pid.get_mut(&pid) {
            let slot = match which {
                Kept::Stat => &mut pair.stat,
                Kept::Io => &mut pair.io,
            };
            if let Some(file) = slot {
                match buf.reread_record(file) {
                    Ok(()) => {
                        pair.generation = generation;
                        return Ok(());
                    }
                    // Its process has exited; the pid listed now is another process, or none.
                    Err(err) if Fault::of(&err) == Fault::Vanished => {
                        self.forget(pid);
                    }
                    // E.g. access to `io` lost after a change of owner: open again to find out.
                    Err(_) => {
                        *slot = None;
                        self.open -= 1;
                    }
                }
            }
        }
        path.set_base(proc_root, pid);
        let file = buf.read_record(path.join(which.name()))?;
        if self.open < self.max {
            let pair = self.by_pid.entry(pid).or_insert(KeptPair {
                stat: None,
                io: None,
                generation,
            });
            let slot = match which {
                Kept::Stat => &mut pair.stat,
                Kept::Io => &mut pair.io,
            };
            if slot.replace(file).is_none() {
                self.open += 1;
            }
            pair.generation = generation;
        }
        Ok(())
    }

    fn forget(&mut self, pid: u32) {
        if let Some(pair) = self.by_pid.remove(&pid) {
            self.open -= usize::from(pair.stat.is_some()) + usize::from(pair.io.is_some());
        }
    }

    /// Closes the files of the processes not seen in the sweep of `generation`.
    fn retain_seen(&mut self, generation: u64) {
        self.by_pid.retain(|_, pair| pair.generation == generation);
        self.open = self
            .by_pid
            .values()
            .map(|pair| usize::from(pair.stat.is_some()) + usize::from(pair.io.is_some()))
            .sum();
    }
}

impl ProcessCollector {
    pub fn new(roots: Roots, config: ProcessConfig) -> Self {
        // USER_HZ and the page size are the same on every machine gridmon runs on; the fallbacks
        // only matter if sysconf were ever to fail.
        let clk_tck = procfs::sysconf(libc::_SC_CLK_TCK).unwrap_or(100) as f64;
        let page_size = procfs::sysconf(libc::_SC_PAGESIZE).unwrap_or(4096);
        let fd_count_from_size = procfs::is_procfs(&roots.proc);
        let users = UserNames::new(roots.etc.join("passwd"));
        Self {
            roots,
            config,
            clk_tck,
            page_size,
            fd_count_from_size,
            boot_time_ms: None,
            last: None,
            generation: 0,
            buf: ReadBuf::default(),
            path: PathBuffer::default(),
            kept: KeptFiles::default(),
            procs: Vec::new(),
            order: Vec::new(),
            history: HashMap::new(),
            users,
            vanished_total: 0,
            denied_total: 0,
        }
    }

    /// One sweep of /proc/<pid>/. Never fails as a whole except when the proc root itself cannot
    /// be listed.
    pub fn sample(&mut self) -> Result<ProcessTable, CollectError> {
        self.sample_at(Instant::now())
    }

    /// [`ProcessCollector::sample`] with the caller's reading of the monotonic clock, so that
    /// several collectors can share one timestamp (and tests can choose the interval).
    pub fn sample_at(&mut self, now: Instant) -> Result<ProcessTable, CollectError> {
        self.generation += 1;
        let uptime_s = self.uptime();
        if self.boot_time_ms.is_none() {
            self.boot_time_ms = self.boot_time_ms_now(uptime_s);
        }
        // Read each time: the binary may raise the limit after this collector was made.
        self.kept.max = procfs::open_files_limit().map_or(0, |limit| {
            (limit / KEPT_FILES_SHARE_OF_LIMIT).min(KEPT_FILES_MAX) as usize
        });
        let mut faults = Faults::default();
        self.sweep(&mut faults)?;

        let elapsed_s = self
            .last
            .map_or(0.0, |l| now.saturating_duration_since(l.at).as_secs_f64());
        self.cpu_rates(elapsed_s);
        let mut states = StateCounts::default();
        for p in &self.procs {
            states.add(ProcState::from_linux(p.state));
        }
        self.select(&mut faults);
        let rows = self.enrich(elapsed_s, uptime_s, &mut faults);

        let generation = self.generation;
        self.history.retain(|_, h| h.generation == generation);
        self.kept.retain_seen(generation);
        self.last = Some(LastSample { at: now, uptime_s });
        self.vanished_total += faults.vanished;
        self.denied_total += faults.denied;
        if faults.vanished + faults.other > 0 {
            // Processes exit all the time: one summary per sample at most, never per process.
            tracing::debug!(
                vanished = faults.vanished,
                denied = faults.denied,
                unreadable = faults.other,
                "processes skipped or partly read in this sweep"
            );
        }
        Ok(ProcessTable {
            total: u32::try_from(self.procs.len()).unwrap_or(u32::MAX),
            states,
            rows,
            vanished_total: self.vanished_total,
            denied_total: self.denied_total,
        })
    }

    fn uptime(&mut self) -> Option<f64> {
        self.buf.read(&self.roots.proc.join("uptime")).ok()?;
        fields(self.buf.bytes()).next().and_then(parse_f64)
    }

    fn boot_time_ms_now(&mut self, uptime_s: Option<f64>) -> Option<i64> {
        let btime = self
            .buf
            .read(&self.roots.proc.join("stat"))
            .ok()
            .and_then(|()| lines(self.buf.bytes()).find_map(|l| keyed_u64(l, b"btime ")))
            .and_then(|s| i64::try_from(s).ok());
        if let Some(btime) = btime {
            return Some(btime.saturating_mul(1000));
        }
        // No btime (a stripped-down /proc): the wall clock minus the uptime is as good.
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_millis();
        Some(i64::try_from(now_ms).ok()? - (uptime_s? * 1000.0) as i64)
    }

    /// Reads `stat` of every process into `self.procs`, sorted by pid.
    fn sweep(&mut self, faults: &mut Faults) -> Result<(), CollectError> {
        let dir = fs::read_dir(&self.roots.proc).map_err(|source| CollectError::Read {
            path: self.roots.proc.clone(),
            source,
        })?;
        let since_ticks = self.last.and_then(|l| l.uptime_s).map(|u| u * self.clk_tck);
        self.procs.clear();
        for dent in dir {
            // An error while listing is the end of the listing for this sweep.
            let Ok(dent) = dent else {
                faults.other += 1;
                break;
            };
            let Some(pid) =
                parse_u64(dent.file_name().as_bytes()).and_then(|p| u32::try_from(p).ok())
            else {
                continue;
            };
            let read = self.kept.read(
                Kept::Stat,
                pid,
                self.generation,
                &mut self.path,
                &self.roots.proc,
                &mut self.buf,
            );
            if let Err(err) = read {
                match Fault::of(&err) {
                    Fault::Vanished => faults.vanished += 1,
                    Fault::Denied => faults.denied += 1,
                    Fault::Other => faults.other += 1,
                }
                continue;
            }
            // A short or garbled stat comes from a process torn down while it was read.
            let Some(st) = parse_stat(self.buf.bytes()).filter(|st| st.pid == pid) else {
                faults.vanished += 1;
                continue;
            };
            self.procs.push(Proc {
                pid,
                ppid: st.ppid,
                comm: Comm::new(st.comm),
                state: st.state,
                ticks: st.utime.saturating_add(st.stime),
                starttime: st.starttime,
                priority: st.priority,
                nice: st.nice,
                threads: st.threads,
                vsz_bytes: st.vsize,
                rss_bytes: st.rss_pages.saturating_mul(self.page_size),
                cpu_pct: 0.0,
                new_since_last: since_ticks.is_some_and(|t| st.starttime as f64 + 1.0 >= t),
                selected: false,
            });
        }
        // procfs lists pids in order already, so this is a linear check there.
        self.procs.sort_unstable_by_key(|p| p.pid);
        Ok(())
    }

    /// CPU share of each process over the interval, from its CPU ticks now and a sample ago.
    fn cpu_rates(&mut self, elapsed_s: f64) {
        let generation = self.generation;
        let scale = if elapsed_s > 0.0 {
            100.0 / (self.clk_tck * elapsed_s)
        } else {
            0.0
        };
        for p in &mut self.procs {
            let delta = match self.history.entry(p.key()) {
                MapEntry::Occupied(e) => {
                    let h = e.into_mut();
                    let delta = p.ticks.saturating_sub(h.ticks);
                    h.ticks = p.ticks;
                    h.generation = generation;
                    delta
                }
                MapEntry::Vacant(e) => {
                    e.insert(History {
                        ticks: p.ticks,
                        io: None,
                        generation,
                        pattern_match: None,
                        ident: None,
                    });
                    if p.new_since_last {
                        p.ticks
                    } else {
                        0
                    }
                }
            };
            p.cpu_pct = (delta as f64 * scale) as f32;
        }
    }

    /// Marks the rows of the table: all processes, or the top `top_n` by CPU and by memory plus
    /// every process matching a pattern.
    fn select(&mut self, faults: &mut Faults) {
        if self.config.select == ProcessSelect::All {
            self.procs.iter_mut().for_each(|p| p.selected = true);
            return;
        }
        let top = self.config.top_n.min(self.procs.len());
        if top > 0 {
            let procs = &mut self.procs;
            self.order.clear();
            self.order.extend(0..procs.len());
            // Ties (most processes use no CPU) go to the lower pid so the choice is stable.
            self.order.select_nth_unstable_by(top - 1, |&a, &b| {
                procs[b]
                    .cpu_pct
                    .total_cmp(&procs[a].cpu_pct)
                    .then(procs[a].pid.cmp(&procs[b].pid))
            });
            self.order[..top]
                .iter()
                .for_each(|&i| procs[i].selected = true);
            self.order.select_nth_unstable_by(top - 1, |&a, &b| {
                procs[b]
                    .rss_bytes
                    .cmp(&procs[a].rss_bytes)
                    .then(procs[a].pid.cmp(&procs[b].pid))
            });
            self.order[..top]
                .iter()
                .for_each(|&i| procs[i].selected = true);
        }
        if self.config.patterns.is_empty() {
            return;
        }
        for i in 0..self.procs.len() {
            if !self.procs[i].selected && self.matches_patterns(i, faults) {
                self.procs[i].selected = true;
            }
        }
    }

    /// Whether process `i` matches a pattern by comm or by `argv[0]`'s base name. The answer is
    /// remembered per process, so the cmdline is read once per process, not once per sample.
    fn matches_patterns(&mut self, i: usize, faults: &mut Faults) -> bool {
        let p = &self.procs[i];
        let fingerprint = p.comm.fingerprint();
        let key = p.key();
        if let Some((fp, matched)) = self.history.get(&key).and_then(|h| h.pattern_match) {
            if fp == fingerprint {
                return matched;
            }
        }
        let patterns = &self.config.patterns;
        let mut matched = patterns
            .iter()
            .any(|pat| glob_match(pat.as_bytes(), p.comm.as_bytes()));
        if !matched {
            self.path.set_base(&self.roots.proc, p.pid);
            let read = self
                .buf
                .read_prefix(self.path.join("cmdline"), ARGV0_READ_MAX);
            // A process gone by now is counted when (if) it is enriched; here it just does not match.
            if let Ok(Ok(())) = faults.optional(read) {
                let name = argv0_basename(self.buf.bytes());
                matched =
                    !name.is_empty() && patterns.iter().any(|pat| glob_match(pat.as_bytes(), name));
            }
        }
        if let Some(h) = self.history.get_mut(&key) {
            h.pattern_match = Some((fingerprint, matched));
        }
        matched
    }

    /// The rows for the selected processes, with the reads the sweep skipped.
    fn enrich(
        &mut self,
        elapsed_s: f64,
        uptime_s: Option<f64>,
        faults: &mut Faults,
    ) -> Vec<ProcessRow> {
        let selected = self.procs.iter().filter(|p| p.selected).count();
        let mut rows = Vec::with_capacity(selected);
        if selected == 0 {
            return rows;
        }
        self.users.refresh();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok());
        for i in 0..self.procs.len() {
            if !self.procs[i].selected {
                continue;
            }
            match self.row(i, elapsed_s, uptime_s, now_ms, faults) {
                Ok(row) => rows.push(row),
                Err(Gone) => faults.vanished += 1,
            }
        }
        rows
    }

    fn row(
        &mut self,
        i: usize,
        elapsed_s: f64,
        uptime_s: Option<f64>,
        now_ms: Option<i64>,
        faults: &mut Faults,
    ) -> Result<ProcessRow, Gone> {
        let p = self.procs[i].clone();
        let key = p.key();
        self.path.set_base(&self.roots.proc, p.pid);
        let ident = self.ident(&p, faults)?;

        let fds = if ident.fds_denied {
            None
        } else {
            let count = match fs::metadata(self.path.join("fd")) {
                Ok(m) if self.fd_count_from_size && m.len() > 0 => {
                    Ok(u32::try_from(m.len()).unwrap_or(u32::MAX))
                }
                // Zero is also what kernels before 6.2 report: count the entries.
                Ok(_) => count_entries(self.path.join("fd")),
                Err(err) => Err(err),
            };
            let count = faults.optional(count)?;
            if count == Err(Fault::Denied) {
                self.mark_ident(key, |id| id.fds_denied = true);
            }
            count.ok()
        };

        let io = if ident.io_denied {
            None
        } else {
            let read = self.kept.read(
                Kept::Io,
                p.pid,
                self.generation,
                &mut self.path,
                &self.roots.proc,
                &mut self.buf,
            );
            match read {
                // Kernels without task I/O accounting have no `io` file at all.
                Err(err) if err.kind() == io::ErrorKind::NotFound => None,
                read => match faults.optional(read)? {
                    Ok(()) => parse_io(self.buf.bytes()),
                    Err(Fault::Denied) => {
                        self.mark_ident(key, |id| id.io_denied = true);
                        None
                    }
                    Err(_) => None,
                },
            }
        };

        let (read_bytes_ps, write_bytes_ps) = match io {
            None => (None, None),
            Some((read, write)) => {
                let history = self.history.get_mut(&key);
                let (read_prev, write_prev) = match history.as_ref().and_then(|h| h.io) {
                    Some(prev) => prev,
                    None if p.new_since_last => (0, 0),
                    // First time this process is enriched: no baseline yet, so rate 0 as the
                    // model specifies for a first sample.
                    None => (read, write),
                };
                if let Some(h) = history {
                    h.io = Some((read, write));
                }
                let rate = |now: u64, prev: u64| {
                    if elapsed_s > 0.0 {
                        now.saturating_sub(prev) as f64 / elapsed_s
                    } else {
                        0.0
                    }
                };
                (Some(rate(read, read_prev)), Some(rate(write, write_prev)))
            }
        };

        let start_s = p.starttime as f64 / self.clk_tck;
        let start_time_ms = self
            .boot_time_ms
            .unwrap_or(0)
            .saturating_add((start_s * 1000.0) as i64);
        // Uptime minus start, as `ps` computes elapsed time, so a stepped wall clock does not
        // show up as processes running for negative or days-long spans.
        let run_time_s = match (uptime_s, now_ms) {
            (Some(up), _) => up - start_s,
            (None, Some(now)) => now.saturating_sub(start_time_ms) as f64 / 1000.0,
            (None, None) => 0.0,
        }
        .max(0.0);

        Ok(ProcessRow {
            pid: p.pid,
            ppid: p.ppid,
            name: String::from_utf8_lossy(p.comm.as_bytes()).into_owned(),
            cmdline: ident.cmdline,
            user: ident.uid.map(|u| self.users.name(u)).unwrap_or_default(),
            // (uid_t)-1, the kernel's "no uid", when the owner could not be read.
            uid: ident.uid.unwrap_or(u32::MAX),
            state: ProcState::from_linux(p.state),
            cpu_pct: p.cpu_pct,
            rss_bytes: p.rss_bytes,
            vsz_bytes: p.vsz_bytes,
            fds,
            threads: p.threads,
            read_bytes_ps,
            write_bytes_ps,
            nice: p.nice,
            priority: p.priority,
            start_time_ms,
            run_time_s,
            cpu_time_s: p.ticks as f64 / self.clk_tck,
        })
    }

    /// Cmdline and owner of `p`: from the cache unless it is due for a refresh or the process
    /// has exec'd since. Expects `self.path` at `p`'s directory.
    fn ident(&mut self, p: &Proc, faults: &mut Faults) -> Result<Ident, Gone> {
        let key = p.key();
        let generation = self.generation;
        let fingerprint = p.comm.fingerprint();
        let cached = self.history.get(&key).and_then(|h| h.ident.as_ref());
        if let Some(ident) = cached {
            if ident.fingerprint == fingerprint && generation < ident.refresh_at {
                return Ok(ident.clone());
            }
        }
        // The owner of /proc/<pid> is the effective uid even for non-dumpable processes (procfs
        // exempts the pid directory from that rule so that `ps` need not read `status`).
        let uid = faults
            .optional(fs::metadata(self.path.base()))?
            .ok()
            .map(|m| m.uid());
        let max = self.config.cmdline_max;
        let read = self
            .buf
            .read_prefix(self.path.join("cmdline"), max.saturating_add(1));
        let cmdline = match faults.optional(read)? {
            Ok(()) => format_cmdline(self.buf.bytes_mut(), max),
            Err(_) => String::new(),
        };
        // Spread the refreshes over the samples rather than doing them all at once.
        let n = IDENT_REFRESH_SAMPLES;
        let refresh_at = generation + n - (generation + u64::from(p.pid)) % n;
        let ident = Ident {
            cmdline,
            uid,
            io_denied: false,
            fds_denied: false,
            fingerprint,
            refresh_at,
        };
        if let Some(h) = self.history.get_mut(&key) {
            h.ident = Some(ident.clone());
        }
        Ok(ident)
    }

    fn mark_ident(&mut self, key: ProcKey, mark: impl FnOnce(&mut Ident)) {
        if let Some(ident) = self.history.get_mut(&key).and_then(|h| h.ident.as_mut()) {
            mark(ident);
        }
    }
}

fn count_entries(dir: &std::path::Path) -> io::Result<u32> {
    let mut n: u32 = 0;
    for entry in fs::read_dir(dir)? {
        entry?;
        n = n.saturating_add(1);
    }
    Ok(n)
}

/// The fields of `/proc/<pid>/stat` the collector uses (see proc_pid_stat(5)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat<'a> {
    pid: u32,
    comm: &'a [u8],
    state: u8,
    ppid: u32,
    utime: u64,
    stime: u64,
    priority: i32,
    nice: i32,
    threads: u32,
    starttime: u64,
    vsize: u64,
    rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`; `None` when it is cut short or garbled.
///
/// `comm` may hold any byte, including spaces and `)`, so it runs from the first `(` to the
/// *last* `)`. Only the first 24 fields are read: later kernels append more, never reorder.
fn parse_stat(buf: &[u8]) -> Option<Stat<'_>> {
    let open = buf.iter().position(|&b| b == b'(')?;
    let close = buf.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let pid = u32::try_from(parse_u64(buf[..open].trim_ascii())?).ok()?;
    // Fields 3.. of proc_pid_stat(5): index 0 here is field 3 (state).
    let mut f = [&b""[..]; 22];
    let mut it = fields(&buf[close + 1..]);
    for slot in &mut f {
        *slot = it.next()?;
    }
    let &[state] = f[0] else {
        return None;
    };
    let u = |i: usize| parse_u64(f[i]);
    let small = |i: usize| parse_i64(f[i]).and_then(|v| i32::try_from(v).ok());
    Some(Stat {
        pid,
        comm: &buf[open + 1..close],
        state,
        ppid: u32::try_from(u(1)?).ok()?,
        utime: u(11)?,
        stime: u(12)?,
        priority: small(15)?,
        nice: small(16)?,
        threads: u32::try_from(u(17)?).ok()?,
        starttime: u(19)?,
        vsize: u(20)?,
        // Signed in the kernel's format string, though never negative.
        rss_pages: u64::try_from(parse_i64(f[21])?).unwrap_or(0),
    })
}

/// `(read_bytes, write_bytes)` from `/proc/<pid>/io`: the bytes that reached storage, unlike
/// `rchar`/`wchar` which include the page cache, pipes and sockets.
fn parse_io(buf: &[u8]) -> Option<(u64, u64)> {
    let (mut read, mut write) = (None, None);
    for line in lines(buf) {
        if let Some(v) = keyed_u64(line, b"read_bytes:") {
            read = Some(v);
        } else if let Some(v) = keyed_u64(line, b"write_bytes:") {
            write = Some(v);
        }
    }
    Some((read?, write?))
}

/// Turns the raw NUL-separated `cmdline` (at most `max + 1` bytes of it) into the arguments
/// joined by spaces, cut at `max` bytes on a character boundary. Invalid UTF-8 is replaced.
fn format_cmdline(raw: &mut [u8], max: usize) -> String {
    let end = raw.iter().rposition(|&b| b != 0).map_or(0, |last| last + 1);
    let raw = &mut raw[..end];
    for b in raw.iter_mut() {
        if *b == 0 {
            *b = b' ';
        }
    }
    // The byte after the cut (read on purpose) tells whether the cut splits a character:
    // if it does, the partial character turns into U+FFFD, which then straddles `max`.
    let mut s = String::from_utf8_lossy(raw).into_owned();
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The base name of `argv[0]` in a raw cmdline.
fn argv0_basename(cmdline: &[u8]) -> &[u8] {
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    match argv0.iter().rposition(|&b| b == b'/') {
        Some(slash) => &argv0[slash + 1..],
        None => argv0,
    }
}

/// Shell-style glob with `*` (any run, also empty) and `?` (one character); everything else
/// matches itself. Works on UTF-8 bytes, so `?` steps over a whole multi-byte character.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Length of the character starting with byte `b` (1 for stray continuation bytes).
    fn char_len(b: u8) -> usize {
        match b {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 1,
        }
    }
    let step = |t: usize| (t + char_len(text[t])).min(text.len());
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: the pattern after it, and the text it swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                p += 1;
                star = Some((p, t));
            }
            Some(b'?') => {
                p += 1;
                t = step(t);
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and retry.
                Some((sp, st)) => {
                    let st = step(st);
                    star = Some((sp, st));
                    p = sp;
                    t = st;
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// uid → user name from `<etc>/passwd`, parsed once and again only when the file changes.
#[derive(Debug)]
struct UserNames {
    path: PathBuf,
    /// Modification time and length of the file parsed last.
    version: Option<(SystemTime, u64)>,
    names: HashMap<u32, String>,
}

impl UserNames {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            version: None,
            names: HashMap::new(),
        }
    }

    fn refresh(&mut self) {
        let version = fs::metadata(&self.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if version.is_some() && version == self.version {
            return;
        }
        self.version = version;
        self.names.clear();
        // A missing passwd (minimal containers) leaves every user shown by number.
        let Ok(text) = fs::read(&self.path) else {
            return;
        };
        for line in lines(&text) {
            let mut f = line.split(|&b| b == b':');
            let (Some(name), Some(_password), Some(uid)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let (Some(uid), Ok(name)) = (
                parse_u64(uid).and_then(|u| u32::try_from(u).ok()),
                std::str::from_utf8(name),
            ) else {
                continue;
            };
            // The first entry wins, as in getpwuid.
            self.names.entry(uid).or_insert_with(|| name.to_owned());
        }
    }

    /// Users not in the file (LDAP, NIS, a container's own) show as their number.
    fn name(&self, uid: u32) -> String {
        self.names
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stat_with_odd_comm() {
        let line = b"4242 (my (weird) prog) ) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 3 0 12345 10485760 256 18446744073709551615 1 1 0\n";
        let st = parse_stat(line).expect("parses");
        assert_eq!(st.pid, 4242);
        assert_eq!(st.comm, b"my (weird) prog) ");
        assert_eq!(st.state, b'S');
        assert_eq!(st.ppid, 1);
        assert_eq!((st.utime, st.stime), (150, 50));
        assert_eq!((st.priority, st.nice, st.threads), (20, 0, 3));
        assert_eq!(
            (st.starttime, st.vsize, st.rss_pages),
            (12345, 10485760, 256)
        );

        let rt = b"7 (rt) R 2 0 0 0 -1 0 0 0 0 0 1 2 0 0 -100 -20 1 0 5 0 0";
        let st = parse_stat(rt).expect("parses");
        assert_eq!((st.priority, st.nice), (-100, -20));
    }

    #[test]
    fn stat_rejects_short_and_garbled() {
        fn check(input: &[u8]) {
            assert_eq!(
                parse_stat(input),
                None,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        check(b"");
        check(b"12 (cut");
        check(b"12 (x) S 1 2 3");
        check(b")12 (x S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21");
        check(b"12 (x) SS 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21");
        check(b"x (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21");
    }

    proptest! {
        #[test]
        fn stat_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_stat(&bytes);
        }

        #[test]
        fn stat_parser_never_panics_on_near_valid(
            comm in proptest::collection::vec(any::<u8>(), 0..40),
            tail in "[ 0-9a-zA-Z()-]{0,200}",
        ) {
            let mut bytes = b"1 (".to_vec();
            bytes.extend_from_slice(&comm);
            bytes.extend_from_slice(b") ");
            bytes.extend_from_slice(tail.as_bytes());
            let _ = parse_stat(&bytes);
        }

        #[test]
        fn cmdline_is_bounded_and_valid(raw in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..40) {
            let mut raw = raw;
            raw.truncate(max + 1);
            let s = format_cmdline(&mut raw, max);
            prop_assert!(s.len() <= max);
        }
    }

    #[test]
    fn cmdline_formatting() {
        fn check(raw: &[u8], max: usize, expected: &str) {
            let mut buf = raw[..raw.len().min(max + 1)].to_vec();
            assert_eq!(format_cmdline(&mut buf, max), expected, "{raw:?} max {max}");
        }
        check(
            b"/usr/bin/python3\0-m\0http.server\0",
            256,
            "/usr/bin/python3 -m http.server",
        );
        check(b"", 256, "");
        check(b"abc\0", 3, "abc");
        check(b"abcdef\0", 3, "abc");
        // "é" is two bytes (c3 a9): a cut between them drops the whole character.
        check("aé\0".as_bytes(), 2, "a");
        check("aé\0".as_bytes(), 3, "aé");
        check("€€".as_bytes(), 4, "€");
        check("€€".as_bytes(), 5, "€");
        check("€€".as_bytes(), 6, "€€");
        check(b"bad\xff\0x", 256, "bad\u{fffd} x");
        // setproctitle-style: one argument padded with NULs.
        check(
            b"nginx: worker process\0\0\0\0",
            256,
            "nginx: worker process",
        );
    }

    #[test]
    fn argv0() {
        fn check(raw: &[u8], expected: &str) {
            assert_eq!(argv0_basename(raw), expected.as_bytes(), "{raw:?}");
        }
        check(b"/usr/bin/python3\0-m\0x", "python3");
        check(b"node\0server.js", "node");
        check(b"", "");
        check(b"/trailing/\0", "");
    }

    #[test]
    fn glob() {
        fn check(pattern: &str, text: &str, expected: bool) {
            assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                expected,
                "{pattern:?} vs {text:?}"
            );
        }
        check("", "", true);
        check("", "a", false);
        check("*", "", true);
        check("*", "anything", true);
        check("nginx", "nginx", true);
        check("nginx", "nginx2", false);
        check("nginx*", "nginx: worker", true);
        check("*sql*", "postgresql", true);
        check("*sql*", "mysqld", true);
        check("*sql", "mysqld", false);
        check("?", "a", true);
        check("?", "", false);
        check("??", "a", false);
        check("kworker/?:*", "kworker/0:1-events", true);
        check("kworker/?:*", "kworker/10:1", false);
        check("a*b*c", "aXbYc", true);
        check("a*b*c", "aXbYcZ", false);
        check("a*b*c", "abbbc", true);
        check("*a*a*a*", "aaa", true);
        check("*a*a*a*", "aa", false);
        check("**", "x", true);
        check("h?llo", "héllo", true);
        check("h??llo", "héllo", false);
        check("*é", "café", true);
        check("gridmon-*", "gridmon-agent", true);
        check("GRIDMON", "gridmon", false);
    }

    #[test]
    fn io_file() {
        let io = b"rchar: 100\nwchar: 200\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_io(io), Some((4096, 8192)));
        assert_eq!(parse_io(b"rchar: 1\n"), None);
    }

    #[test]
    fn optional_reads_map_faults() {
        let mut faults = Faults::default();
        assert!(matches!(faults.optional(Ok(7)), Ok(Ok(7))));

        let denied: io::Result<u32> = Err(io::ErrorKind::PermissionDenied.into());
        assert!(matches!(faults.optional(denied), Ok(Err(Fault::Denied))));
        let eacces: io::Result<u32> = Err(io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(faults.optional(eacces), Ok(Err(Fault::Denied))));
        assert_eq!(faults.denied, 2);

        let gone: io::Result<u32> = Err(io::ErrorKind::NotFound.into());
        assert!(faults.optional(gone).is_err());
        let esrch: io::Result<u32> = Err(io::Error::from_raw_os_error(libc::ESRCH));
        assert!(faults.optional(esrch).is_err());

        let other: io::Result<u32> = Err(io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(faults.optional(other), Ok(Err(Fault::Other))));
        assert_eq!((faults.denied, faults.other, faults.vanished), (2, 1, 0));
    }

    #[test]
    fn kept_files_stay_within_their_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        for pid in [1, 2] {
            fs::create_dir(dir.path().join(pid.to_string())).expect("mkdir");
            fs::write(
                dir.path().join(format!("{pid}/stat")),
                format!("{pid} (x)\n"),
            )
            .expect("write");
        }
        let (mut path, mut buf) = (PathBuffer::default(), ReadBuf::default());
        let mut kept = KeptFiles {
            max: 1,
            ..KeptFiles::default()
        };
        for generation in 1..=2 {
            for pid in [1, 2] {
                kept.read(Kept::Stat, pid, generation, &mut path, dir.path(), &mut buf)
                    .expect("read");
                assert_eq!(buf.bytes(), format!("{pid} (x)\n").as_bytes());
            }
            assert_eq!(
                (kept.open, kept.by_pid.len()),
                (1, 1),
                "pid 1 kept, pid 2 read afresh"
            );
        }
        // Rewritten in place, the kept file shows the new content.
        fs::write(dir.path().join("1/stat"), "1 (y)\n").expect("rewrite");
        kept.read(Kept::Stat, 1, 3, &mut path, dir.path(), &mut buf)
            .expect("read");
        assert_eq!(buf.bytes(), b"1 (y)\n");
        kept.retain_seen(4);
        assert_eq!((kept.open, kept.by_pid.len()), (0, 0));
    }

    /// A kept file whose process has exited is dropped, and the pid is looked up afresh.
    #[test]
    #[allow(clippy::disallowed_methods)] // a bare child suffices here; nothing outlives the test
    fn kept_files_of_an_exited_process_are_dropped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let (mut path, mut buf) = (PathBuffer::default(), ReadBuf::default());
        let mut kept = KeptFiles {
            max: 8,
            ..KeptFiles::default()
        };
        let proc_root = std::path::Path::new("/proc");
        kept.read(Kept::Stat, pid, 1, &mut path, proc_root, &mut buf)
            .expect("child's stat");
        assert_eq!(parse_stat(buf.bytes()).map(|st| st.pid), Some(pid));
        assert_eq!(kept.open, 1);

        child.kill().expect("kill");
        child.wait().expect("reap");
        let err = kept
            .read(Kept::Stat, pid, 2, &mut path, proc_root, &mut buf)
            .expect_err("gone");
        assert_eq!(Fault::of(&err), Fault::Vanished);
        assert_eq!((kept.open, kept.by_pid.len()), (0, 0));
    }

    #[test]
    fn passwd_is_cached_and_reloaded_on_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("passwd");
        fs::write(&path, "root:x:0:0:root:/root:/bin/sh\nbroken line\nalice:x:1000:1000::/home/alice:/bin/sh\nshadow:x:1000:1:::\n")
            .expect("write");
        let mut users = UserNames::new(path.clone());
        users.refresh();
        assert_eq!(users.name(0), "root");
        assert_eq!(users.name(1000), "alice", "first entry wins");
        assert_eq!(users.name(4242), "4242");

        // A different length is a change even where the mtime's resolution is coarse.
        fs::write(
            &path,
            "root:x:0:0:root:/root:/bin/sh\nbob:x:4242:4242::/home/bob:/bin/sh\n",
        )
        .expect("write");
        users.refresh();
        assert_eq!(users.name(4242), "bob");
        assert_eq!(users.name(1000), "1000");

        fs::remove_file(&path).expect("remove");
        users.refresh();
        assert_eq!(users.name(0), "0");
    }
}
