//! The store's own threads never preempt the threads serving requests: group commit, its
//! helpers and the spare-segment preparer run under `SCHED_BATCH`. (Its own test binary, so no
//! other test's store is starting threads while these are looked at.)

mod common;

use common::*;
use wharf_store::Store;

/// Every thread of this process whose name starts with `prefix`, with its scheduling policy.
fn threads_named(prefix: &str) -> Vec<(String, i32)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let task = task.unwrap();
        let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else { continue };
        let comm = comm.trim().to_owned();
        if comm.starts_with(prefix) {
            let tid: i32 = task.file_name().to_str().unwrap().parse().unwrap();
            // SAFETY: only reads the policy of a thread of this process.
            let policy = unsafe { libc::sched_getscheduler(tid) };
            found.push((comm, policy));
        }
    }
    found
}

#[test]
fn store_threads_run_batch_scheduled() {
    // SAFETY (both calls): pid 0 is this thread; the call only reads its policy.
    let callers_policy = unsafe { libc::sched_getscheduler(0) };
    let tmp = tempfile::tempdir().unwrap();
    let store = open_preallocated(tmp.path(), 1 << 20);
    let (log, _, _) = recover(&store, 1);
    // Appends and settles in one round sync two files: a helper thread joins the sync thread.
    for i in 0..200 {
        let (id, _) = log.append(&record(i, 4000)).unwrap();
        log.settle(id).unwrap();
    }
    store.flush().unwrap();

    let threads = threads_named("wharf-store");
    assert!(threads.iter().any(|(name, _)| name == "wharf-store-syn"), "{threads:?}");
    assert!(threads.iter().any(|(name, _)| name == "wharf-store-spa"), "{threads:?}");
    for (name, policy) in &threads {
        assert_eq!(*policy, libc::SCHED_BATCH, "{name} runs under policy {policy}");
    }
    // The caller's own thread is left as it was.
    assert_eq!(unsafe { libc::sched_getscheduler(0) }, callers_policy);
}
