//! The Linux scheduling policy of the server's threads.
//!
//! Instance workers always run on `SCHED_BATCH`: the same CPU share as any
//! other thread, but waking one never preempts the thread that woke it.
//! A request's arrival wakes an idle worker; with the default policy the
//! woken worker usually preempts the I/O thread at once when they share a
//! core, takes the one request queued so far, runs it alone, and hands the
//! core back: two context switches and one model run per request, so
//! batching never forms under load. Measured on one core (iris, REST binary,
//! 64 outstanding requests): average batch 1.04-1.08 rows and 100-118 µs of
//! server CPU per request before, 5-10 rows and 44-87 µs after (a noisy
//! machine; docs/benchmarks.md). On a core of its own a woken worker runs at
//! once either way, so nothing is lost where there is room.
//!
//! The I/O threads join them (`--io-thread-policy`, by default only when the
//! process may use a single CPU). The same thing happens the other way: a
//! request arriving during a model run wakes the I/O thread, which then
//! preempts the run, reads that one request and queues it, and hands the
//! core back, once per request. On `SCHED_BATCH` it waits for the run to end
//! (or for the run's time slice to), then reads everything that arrived
//! meanwhile in one go, and the next batch is larger. Measured on one core
//! (interleaved runs, medians of five): batches 5-20% larger in five of six
//! cases; server CPU per request 7-13% lower for iris over REST (binary and
//! JSON, 64 in flight) and dense over gRPC (16 in flight), unchanged within
//! the noise elsewhere; no change at one request in flight, where the core
//! is idle when a request arrives (docs/benchmarks.md). Where
//! cores are shared with other programs, an I/O thread on `SCHED_BATCH`
//! would also wait for their time slices, so `auto` leaves the I/O threads
//! alone unless the server has a core to itself.
//!
//! Unprivileged: any thread may move itself to `SCHED_BATCH`.

/// Moves the calling thread to `SCHED_BATCH` (see the module docs); on
/// failure, or off Linux, it keeps its policy.
pub fn no_wakeup_preemption() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `sched_setscheduler` only reads `param`, which lives for
        // the whole call; pid 0 names the calling thread, so no other
        // thread's state is touched.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "cannot move a thread to SCHED_BATCH; it keeps the default policy");
        }
    }
}

/// Whether the calling thread's CPU affinity mask allows exactly one CPU
/// (false when it cannot be read, and off Linux).
pub fn only_one_cpu() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `cpu_set_t` is a plain bit array, valid when zeroed.
        #[allow(unsafe_code)]
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the kernel writes at most `size_of::<cpu_set_t>()` bytes
        // into `set`, which is that large and lives for the whole call; pid
        // 0 names the calling thread.
        #[allow(unsafe_code)]
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        // SAFETY: `CPU_COUNT` only reads the set the kernel filled in.
        #[allow(unsafe_code)]
        let count = unsafe { libc::CPU_COUNT(&set) };
        rc == 0 && count == 1
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mask is read: a thread pinned to one CPU sees one, a thread
    /// allowed two or more does not.
    #[test]
    #[cfg(target_os = "linux")]
    fn the_affinity_mask_is_read() {
        let count = std::thread::spawn(|| {
            // SAFETY: as in `only_one_cpu`.
            #[allow(unsafe_code)]
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            #[allow(unsafe_code)]
            // SAFETY: as in `only_one_cpu`.
            let rc = unsafe {
                libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set)
            };
            assert_eq!(rc, 0);
            #[allow(unsafe_code)]
            // SAFETY: reads the set the kernel filled in.
            let allowed = unsafe { libc::CPU_COUNT(&set) };
            let before = only_one_cpu();
            // Pin this thread to the first allowed CPU.
            let first = (0..libc::CPU_SETSIZE as usize)
                .find(|&cpu| {
                    #[allow(unsafe_code)]
                    // SAFETY: `cpu` is below CPU_SETSIZE, the set's size.
                    unsafe {
                        libc::CPU_ISSET(cpu, &set)
                    }
                })
                .unwrap();
            #[allow(unsafe_code)]
            // SAFETY: a zeroed set is valid.
            let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            #[allow(unsafe_code)]
            // SAFETY: `first` is below CPU_SETSIZE; the call reads `one`,
            // which lives for the call, and pins only this thread.
            let rc = unsafe {
                libc::CPU_SET(first, &mut one);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one)
            };
            assert_eq!(rc, 0);
            (allowed, before, only_one_cpu())
        })
        .join()
        .unwrap();
        assert_eq!(count.1, count.0 == 1);
        assert!(count.2, "a thread pinned to one CPU");
    }
}
