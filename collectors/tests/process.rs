//! Process collector against fixture `/proc` trees, and once against the host's own.

#![allow(clippy::unwrap_used)] // a panic is how a test reports

mod fixtures;

use std::time::{Duration, Instant};

use fixtures::{FakeProc, Tree};
use gridmon_collectors::config::{ProcessConfig, ProcessSelect};
use gridmon_collectors::model::{ProcState, ProcessRow, ProcessTable, StateCounts};
use gridmon_collectors::process::ProcessCollector;
use gridmon_collectors::{CollectError, Roots};

const BTIME: i64 = 1_700_000_000;

/// A tree with the host-wide files the process collector reads and a passwd naming the owner of
/// the fixture's process directories `tester` (listed first: it wins when the tests run as root).
fn tree(uptime_s: f64) -> Tree {
    let t = Tree::new();
    t.write(
        "proc/stat",
        format!("cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 0\nbtime {BTIME}\n"),
    );
    set_uptime(&t, uptime_s);
    t.write(
        "etc/passwd",
        format!(
            "tester:x:{}:100::/home/t:/bin/sh\nroot:x:0:0:root:/root:/bin/sh\n",
            t.owner_uid()
        ),
    );
    // Non-process entries of /proc must be ignored.
    t.write("proc/meminfo", "MemTotal: 1 kB\n");
    t.mkdir("proc/self");
    t.mkdir("proc/12abc");
    t
}

fn set_uptime(t: &Tree, uptime_s: f64) {
    t.write("proc/uptime", format!("{uptime_s:.2} 0.00\n"));
}

fn all() -> ProcessConfig {
    ProcessConfig {
        select: ProcessSelect::All,
        ..ProcessConfig::default()
    }
}

fn row(table: &ProcessTable, pid: u32) -> &ProcessRow {
    table
        .rows
        .iter()
        .find(|r| r.pid == pid)
        .unwrap_or_else(|| panic!("no row for pid {pid}: {table:#?}"))
}

fn pids(table: &ProcessTable) -> Vec<u32> {
    table.rows.iter().map(|r| r.pid).collect()
}

#[test]
fn rows_carry_every_field() {
    let t = tree(1000.0);
    let odd = FakeProc {
        comm: "a b) (c".into(),
        state: 'R',
        ppid: 1,
        utime: 150,
        stime: 50,
        priority: 25,
        nice: 5,
        threads: 4,
        starttime: 5000,
        vsize: 50 << 20,
        rss_pages: 256,
        cmdline: b"/opt/x/bin/a b\0--flag\0value with space\0".to_vec(),
        io: Some((4096, 8192)),
        fds: 5,
        ..FakeProc::new(100, "")
    };
    t.add_process(&FakeProc::new(1, "init"));
    t.add_process(&odd);
    t.add_process(&FakeProc {
        state: 'Z',
        cmdline: Vec::new(),
        io: None,
        fds: 0,
        ..FakeProc::new(200, "defunct")
    });
    t.add_process(&FakeProc {
        state: 'I',
        ppid: 2,
        cmdline: Vec::new(),
        vsize: 0,
        rss_pages: 0,
        ..FakeProc::new(300, "kworker/0:1-events")
    });
    t.add_process(&FakeProc {
        state: 'D',
        ..FakeProc::new(400, "dd")
    });

    let mut c = ProcessCollector::new(t.roots(), all());
    let table = c.sample().unwrap();

    assert_eq!(table.total, 5);
    assert_eq!(pids(&table), [1, 100, 200, 300, 400], "rows in pid order");
    assert_eq!(
        table.states,
        StateCounts {
            running: 1,
            waiting: 2,
            busy: 1,
            zombie: 1,
            ..StateCounts::default()
        }
    );
    assert_eq!((table.vanished_total, table.denied_total), (0, 0));

    let r = row(&table, 100);
    let page = r.rss_bytes / 256;
    assert!(
        page >= 4096 && page.is_power_of_two(),
        "rss is pages times the page size: {}",
        r.rss_bytes
    );
    let expected = ProcessRow {
        pid: 100,
        ppid: 1,
        name: "a b) (c".into(),
        cmdline: "/opt/x/bin/a b --flag value with space".into(),
        user: "tester".into(),
        uid: t.owner_uid(),
        state: ProcState::Running,
        cpu_pct: 0.0,
        rss_bytes: 256 * page,
        vsz_bytes: 50 << 20,
        fds: Some(5),
        threads: 4,
        // No interval yet: rates are 0, but the file was readable.
        read_bytes_ps: Some(0.0),
        write_bytes_ps: Some(0.0),
        nice: 5,
        priority: 25,
        // Started 5000 ticks (50 s) after boot.
        start_time_ms: BTIME * 1000 + 50_000,
        run_time_s: 950.0,
        cpu_time_s: 2.0,
    };
    assert_eq!(*r, expected);

    let zombie = row(&table, 200);
    assert_eq!(
        (zombie.state, zombie.cmdline.as_str(), zombie.fds),
        (ProcState::Zombie, "", Some(0))
    );
    assert_eq!(
        zombie.read_bytes_ps, None,
        "no io file: the field is absent"
    );

    let kthread = row(&table, 300);
    assert_eq!(
        (
            kthread.name.as_str(),
            kthread.cmdline.as_str(),
            kthread.ppid
        ),
        ("kworker/0:1-events", "", 2)
    );
    assert_eq!(kthread.state, ProcState::Waiting);
}

#[test]
fn cpu_from_tick_deltas_and_reused_pids() {
    let t = tree(1000.0);
    t.add_process(&FakeProc {
        utime: 800,
        stime: 200,
        starttime: 100,
        ..FakeProc::new(10, "busy")
    });
    t.add_process(&FakeProc {
        utime: 500,
        starttime: 200,
        ..FakeProc::new(42, "old")
    });
    let mut c = ProcessCollector::new(t.roots(), all());
    let t0 = Instant::now();

    let first = c.sample_at(t0).unwrap();
    assert!(
        first.rows.iter().all(|r| r.cpu_pct == 0.0),
        "no interval, no rates"
    );

    set_uptime(&t, 1002.0);
    // 100 more ticks = 1 s of CPU in 2 s.
    t.add_process(&FakeProc {
        utime: 900,
        stime: 200,
        starttime: 100,
        ..FakeProc::new(10, "busy")
    });
    // pid 42 was reused by a process started at 1001.5 s, after the first sample: all of its
    // 30 ticks fall into the interval, and the old process's 500 ticks must not be subtracted.
    t.add_process(&FakeProc {
        utime: 30,
        starttime: 100_150,
        ..FakeProc::new(42, "new")
    });
    // First seen now, but started long before the first sample (it was unreadable then): its
    // lifetime CPU must not be passed off as the interval's.
    t.add_process(&FakeProc {
        utime: 5000,
        starttime: 300,
        ..FakeProc::new(43, "late")
    });

    let second = c.sample_at(t0 + Duration::from_secs(2)).unwrap();
    assert_eq!(row(&second, 10).cpu_pct, 50.0);
    assert_eq!(row(&second, 10).cpu_time_s, 11.0);
    assert_eq!(row(&second, 42).name, "new");
    assert_eq!(row(&second, 42).cpu_pct, 15.0);
    assert_eq!(row(&second, 43).cpu_pct, 0.0);

    set_uptime(&t, 1004.0);
    t.add_process(&FakeProc {
        utime: 70,
        starttime: 100_150,
        ..FakeProc::new(42, "new")
    });
    let third = c.sample_at(t0 + Duration::from_secs(4)).unwrap();
    assert_eq!(row(&third, 42).cpu_pct, 20.0);
    assert_eq!(row(&third, 10).cpu_pct, 0.0);
}

#[test]
fn io_rates_over_the_interval() {
    let t = tree(1000.0);
    t.add_process(&FakeProc {
        io: Some((1000, 2000)),
        ..FakeProc::new(7, "writer")
    });
    let mut c = ProcessCollector::new(t.roots(), all());
    let t0 = Instant::now();
    let first = c.sample_at(t0).unwrap();
    assert_eq!(
        (row(&first, 7).read_bytes_ps, row(&first, 7).write_bytes_ps),
        (Some(0.0), Some(0.0))
    );

    t.add_process(&FakeProc {
        io: Some((5096, 2000)),
        ..FakeProc::new(7, "writer")
    });
    let second = c.sample_at(t0 + Duration::from_secs(2)).unwrap();
    assert_eq!(
        (
            row(&second, 7).read_bytes_ps,
            row(&second, 7).write_bytes_ps
        ),
        (Some(2048.0), Some(0.0))
    );
}

#[test]
fn vanished_processes_are_counted_not_fatal() {
    let t = tree(1000.0);
    t.add_process(&FakeProc::new(1, "init"));
    // Listed, but gone before its stat was read.
    t.mkdir("proc/500");
    // Torn down while stat was read.
    t.write("proc/501/stat", "501 (half");
    // A stat of another process than the directory says: garbled.
    t.write("proc/503/stat", FakeProc::new(999, "other").stat_line());
    // Swept, then gone before its fds were counted.
    t.add_process(&FakeProc::new(502, "short"));
    t.remove("proc/502/fd");

    let mut c = ProcessCollector::new(t.roots(), all());
    let table = c.sample().unwrap();
    assert_eq!(pids(&table), [1]);
    assert_eq!(table.total, 2, "pid 502 was seen by the sweep");
    assert_eq!(table.vanished_total, 4);
    assert_eq!(table.denied_total, 0);

    let again = c.sample().unwrap();
    assert_eq!(again.vanished_total, 8, "the count is cumulative");
}

#[test]
fn top_by_cpu_and_memory_plus_patterns() {
    let t = tree(1000.0);
    let procs = |extra_ticks: [u64; 3]| {
        let [a, b, c] = extra_ticks;
        vec![
            FakeProc {
                utime: 1000 + a,
                rss_pages: 10,
                ..FakeProc::new(10, "hot")
            },
            FakeProc {
                utime: 1000 + b,
                rss_pages: 11,
                ..FakeProc::new(11, "warm")
            },
            FakeProc {
                utime: 1000 + c,
                rss_pages: 90_000,
                ..FakeProc::new(12, "fat")
            },
            FakeProc {
                rss_pages: 50_000,
                ..FakeProc::new(13, "chubby")
            },
            FakeProc {
                ..FakeProc::new(14, "postgres")
            },
            FakeProc {
                cmdline: b"/opt/app/bin/gridmon-agent\0--config\0x".to_vec(),
                ..FakeProc::new(15, "python3")
            },
            FakeProc {
                ..FakeProc::new(16, "bash")
            },
            FakeProc {
                cmdline: Vec::new(),
                ..FakeProc::new(17, "kworker/0:1")
            },
        ]
    };
    procs([0; 3]).iter().for_each(|p| t.add_process(p));
    let config = ProcessConfig {
        select: ProcessSelect::Top,
        top_n: 2,
        patterns: vec!["postgr*".into(), "gridmon-*".into(), "kw?rker".into()],
        ..ProcessConfig::default()
    };
    let mut c = ProcessCollector::new(t.roots(), config);
    let t0 = Instant::now();
    c.sample_at(t0).unwrap();

    set_uptime(&t, 1001.0);
    procs([200, 100, 10]).iter().for_each(|p| t.add_process(p));
    let table = c.sample_at(t0 + Duration::from_secs(1)).unwrap();
    // 10, 11: top CPU; 12, 13: top RSS; 14 by name; 15 by argv[0].
    assert_eq!(pids(&table), [10, 11, 12, 13, 14, 15]);
    assert_eq!(table.total, 8);
    assert_eq!(
        table.states.waiting, 8,
        "states count every process, not only the rows"
    );
    assert_eq!(
        row(&table, 10).cpu_pct,
        200.0,
        "a process may exceed one core"
    );
}

#[test]
fn cmdline_is_cut_on_a_character_boundary() {
    let t = tree(1000.0);
    // "abc déf": é is two bytes, at offsets 5 and 6.
    t.add_process(&FakeProc {
        cmdline: "abc\0déf\0".into(),
        ..FakeProc::new(5, "x")
    });
    let mut huge = vec![b'x'; 1 << 20];
    huge.push(0);
    t.add_process(&FakeProc {
        cmdline: huge,
        ..FakeProc::new(6, "huge")
    });

    let check = |max: usize, expected: &str| {
        let mut c = ProcessCollector::new(
            t.roots(),
            ProcessConfig {
                cmdline_max: max,
                ..all()
            },
        );
        let table = c.sample().unwrap();
        assert_eq!(row(&table, 5).cmdline, expected, "cmdline_max {max}");
        assert_eq!(row(&table, 6).cmdline.len(), max);
    };
    check(256, "abc déf");
    check(8, "abc déf");
    check(7, "abc dé");
    check(6, "abc d");
    check(5, "abc d");
    check(0, "");
}

#[test]
fn cmdline_is_cached_until_exec_or_refresh() {
    let t = tree(1000.0);
    let proc_with = |comm: &str, cmdline: &str| FakeProc {
        cmdline: cmdline.into(),
        ..FakeProc::new(9, comm)
    };
    t.add_process(&proc_with("python3", "python3\0old.py\0"));
    let mut c = ProcessCollector::new(t.roots(), all());
    let cmdline = |c: &mut ProcessCollector| row(&c.sample().unwrap(), 9).cmdline.clone();
    assert_eq!(cmdline(&mut c), "python3 old.py");

    // setproctitle-style change: seen within ten samples, not necessarily at once.
    t.add_process(&proc_with("python3", "python3\0new.py\0"));
    let seen: Vec<String> = (0..10).map(|_| cmdline(&mut c)).collect();
    assert_eq!(seen.last().unwrap(), "python3 new.py", "{seen:?}");

    // An exec changes comm: the new cmdline is read at once.
    t.add_process(&proc_with("bash", "/bin/bash\0-l\0"));
    assert_eq!(cmdline(&mut c), "/bin/bash -l");
}

#[test]
fn unknown_uid_shows_as_its_number() {
    let t = tree(1000.0);
    t.write("etc/passwd", "root:x:4294967294:0::/:/bin/sh\n");
    t.add_process(&FakeProc::new(5, "x"));
    let mut c = ProcessCollector::new(t.roots(), all());
    let table = c.sample().unwrap();
    assert_eq!(row(&table, 5).user, t.owner_uid().to_string());
}

#[test]
fn missing_proc_root_is_the_only_error() {
    let t = tree(1000.0);
    let mut roots = t.roots();
    roots.proc = t.path("no-such-proc");
    let mut c = ProcessCollector::new(roots, all());
    assert!(matches!(c.sample(), Err(CollectError::Read { .. })));

    // Without uptime, stat or passwd the table is still produced.
    let bare = Tree::new();
    bare.add_process(&FakeProc::new(5, "x"));
    let mut c = ProcessCollector::new(bare.roots(), all());
    let table = c.sample().unwrap();
    assert_eq!(pids(&table), [5]);
    assert_eq!(row(&table, 5).user, bare.owner_uid().to_string());
}

#[test]
fn the_collector_can_move_to_a_blocking_task() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<ProcessCollector>();
}

#[test]
fn this_host() {
    let mut c = ProcessCollector::new(Roots::default(), all());
    c.sample().unwrap();
    let table = c.sample().unwrap();
    assert!(table.total >= 1);
    assert!(table.rows.len() <= table.total as usize);
    let me = row(&table, std::process::id());
    assert!(me.rss_bytes > 0 && me.vsz_bytes >= me.rss_bytes, "{me:?}");
    assert!(
        me.threads >= 1 && !me.name.is_empty() && !me.user.is_empty(),
        "{me:?}"
    );
    assert!(
        me.fds.is_some_and(|n| n >= 1),
        "a test binary has open files: {me:?}"
    );
    assert!(me.cmdline.len() <= ProcessConfig::default().cmdline_max);
    assert!(
        me.run_time_s >= 0.0 && me.start_time_ms > 1_500_000_000_000,
        "{me:?}"
    );
    assert!(me.cpu_pct >= 0.0);
    let states = table.states;
    let counted = states.running
        + states.waiting
        + states.busy
        + states.stopped
        + states.zombie
        + states.dead
        + states.unknown;
    assert_eq!(counted, table.total);

    let mut top = ProcessCollector::new(
        Roots::default(),
        ProcessConfig {
            select: ProcessSelect::Top,
            top_n: 3,
            ..ProcessConfig::default()
        },
    );
    let table = top.sample().unwrap();
    assert!(
        !table.rows.is_empty() && table.rows.len() <= 6,
        "{}",
        table.rows.len()
    );
}
