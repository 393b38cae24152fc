//! Stopping the harness's server processes: the whole process group, gracefully, then for sure.

use std::process::Child;
use std::time::{Duration, Instant};

/// SIGTERM to the child's process group, SIGKILL after `grace`, then reap.
pub fn terminate(child: &mut Child, grace: Duration) {
    let Ok(pid) = i32::try_from(child.id()) else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    // SAFETY: kill(2) with a negative pid signals the process group we created; no memory is touched.
    unsafe {
        libc::kill(-pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => break,
        }
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let _ = child.wait();
}
