//! Durability promises, and the waiting list that wakes each one when its write is on disk.
//!
//! Every write gets an LSN; the sync thread publishes how far the syncs have got. A writer
//! that waits is registered under its LSN, and a round wakes exactly the writers it made
//! durable. (A `watch` channel, used here before, wakes every waiter on every round, and with
//! one SQS call waiting per connection most of those wake-ups found their write still waiting
//! for the next round.) The `watch` channel stays for callers that settle many promises in
//! order as the watermark moves (AMQP publisher confirms): [`Durable::watermark`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::{Result, StoreError};

/// The sync watermark published by a store's sync task.
#[derive(Clone, Debug, Default)]
pub struct SyncWatermark {
    /// Every write with an LSN at or below this is durable.
    pub synced: u64,
    /// Set once a sync failed; no further write will become durable.
    pub failed: Option<Arc<str>>,
}

/// How far a store's syncs have got, and who waits for them. The sync thread publishes here;
/// every pending [`Durable`] holds it.
#[derive(Debug)]
pub(crate) struct SyncProgress {
    /// Every write with an LSN at or below this is durable. Written only under `waiting`, so a
    /// waiter that checks it under that lock cannot miss the round that passes its LSN.
    synced: AtomicU64,
    waiting: Mutex<Waiting>,
    watermark: watch::Sender<SyncWatermark>,
}

#[derive(Debug, Default)]
struct Waiting {
    /// Why no further write will become durable: a sync failed, or the store closed.
    stopped: Option<Arc<str>>,
    /// Wakers by (LSN, registration number); a round takes every entry at or below its LSN.
    wakers: BTreeMap<(u64, u64), Waker>,
    next_registration: u64,
}

impl SyncProgress {
    pub(crate) fn new() -> Arc<Self> {
        let (watermark, _) = watch::channel(SyncWatermark::default());
        Arc::new(SyncProgress { synced: AtomicU64::new(0), waiting: Mutex::default(), watermark })
    }

    /// Every write with an LSN at or below `synced` is on disk: wake their waiters.
    pub(crate) fn publish(&self, synced: u64) {
        let ready = {
            let mut waiting = self.waiting.lock();
            if synced <= self.synced.load(Ordering::Relaxed) {
                return;
            }
            self.synced.store(synced, Ordering::Release);
            let later = waiting.wakers.split_off(&(synced + 1, 0));
            std::mem::replace(&mut waiting.wakers, later)
        };
        ready.into_values().for_each(Waker::wake);
        self.watermark.send_modify(|w| w.synced = synced);
    }

    /// A sync failed: nothing not yet durable will become so.
    pub(crate) fn fail(&self, reason: Arc<str>) {
        self.stop(reason.clone());
        self.watermark.send_modify(|w| w.failed = Some(reason));
    }

    /// The sync thread has exited: writes still waiting will never become durable.
    pub(crate) fn close(&self) {
        self.stop(Arc::from("store closed"));
    }

    fn stop(&self, reason: Arc<str>) {
        let wakers = {
            let mut waiting = self.waiting.lock();
            waiting.stopped.get_or_insert(reason);
            std::mem::take(&mut waiting.wakers)
        };
        wakers.into_values().for_each(Waker::wake);
    }

    pub(crate) fn watermark(&self) -> watch::Receiver<SyncWatermark> {
        self.watermark.subscribe()
    }

    /// Where the write with this LSN stands: `None` while it is not yet durable.
    fn outcome(&self, lsn: u64) -> Option<Result<()>> {
        if self.synced.load(Ordering::Acquire) >= lsn {
            return Some(Ok(()));
        }
        let waiting = self.waiting.lock();
        Self::outcome_locked(&self.synced, &waiting, lsn)
    }

    fn outcome_locked(synced: &AtomicU64, waiting: &Waiting, lsn: u64) -> Option<Result<()>> {
        if synced.load(Ordering::Acquire) >= lsn {
            Some(Ok(()))
        } else {
            waiting.stopped.as_ref().map(|reason| Err(StoreError::SyncFailed(reason.to_string())))
        }
    }
}

/// A promise that a write will be durable. Cheap to clone and to combine.
#[derive(Clone, Debug)]
pub struct Durable(Promise);

#[derive(Clone, Debug)]
enum Promise {
    Done,
    Pending {
        lsn: u64,
        progress: Arc<SyncProgress>,
    },
    /// The write itself failed: it will never be durable.
    Failed(Arc<str>),
}

impl Durable {
    /// Already durable (memory store, or nothing was written).
    pub fn done() -> Self {
        Durable(Promise::Done)
    }

    /// Durable once the store's syncs have passed `lsn`.
    pub(crate) fn pending(lsn: u64, progress: Arc<SyncProgress>) -> Self {
        Durable(Promise::Pending { lsn, progress })
    }

    /// A write that failed: waiting on it, or on anything joined with it, gives the error.
    pub fn failed(error: &StoreError) -> Self {
        Durable(Promise::Failed(Arc::from(error.to_string())))
    }

    /// The promise that covers both writes: LSNs share one watermark, so it is the larger one;
    /// a failed write fails the pair.
    pub fn join(self, other: Durable) -> Durable {
        match (&self.0, &other.0) {
            (Promise::Failed(_), _) => self,
            (_, Promise::Failed(_)) => other,
            _ if other.lsn() > self.lsn() => other,
            _ => self,
        }
    }

    /// The write's LSN (0 when nothing waits on the store).
    pub fn lsn(&self) -> u64 {
        match &self.0 {
            Promise::Pending { lsn, .. } => *lsn,
            Promise::Done | Promise::Failed(_) => 0,
        }
    }

    /// Why the write itself failed, if it did ([`Durable::failed`]); says nothing of syncs, and
    /// never waits or locks.
    pub fn write_error(&self) -> Option<StoreError> {
        match &self.0 {
            Promise::Failed(reason) => Some(StoreError::WriteFailed(reason.to_string())),
            Promise::Done | Promise::Pending { .. } => None,
        }
    }

    /// True if the write is already durable (no waiting needed).
    pub fn is_done(&self) -> bool {
        matches!(self.check(), Some(Ok(())))
    }

    /// Where the write stands now, without waiting: `None` while it is not yet durable,
    /// `Some(Err)` if it failed or the store failed before it became durable.
    pub fn check(&self) -> Option<Result<()>> {
        match &self.0 {
            Promise::Done => Some(Ok(())),
            Promise::Pending { lsn, progress } => progress.outcome(*lsn),
            Promise::Failed(_) => self.write_error().map(Err),
        }
    }

    /// The store's watermark this promise waits on (`None` when it waits on nothing): one
    /// receiver can watch over many promises, which [`Durable::check`] then settles in order.
    pub fn watermark(&self) -> Option<watch::Receiver<SyncWatermark>> {
        match &self.0 {
            Promise::Pending { progress, .. } => Some(progress.watermark()),
            Promise::Done | Promise::Failed(_) => None,
        }
    }

    /// Wait until the write is durable. Woken once, by the round that makes it so.
    pub fn wait(self) -> impl Future<Output = Result<()>> + Send {
        DurableWait { durable: self, registration: None }
    }

    /// Blocking form of [`Durable::wait`], for threads outside the async runtime. Parks the
    /// thread until the round that makes the write durable (no polling).
    pub fn wait_blocking(self) -> Result<()> {
        if let Some(outcome) = self.check() {
            return outcome;
        }
        block_on(self.wait())
    }
}

/// The future of [`Durable::wait`].
struct DurableWait {
    durable: Durable,
    /// Its key in the waiting list while it may still be there.
    registration: Option<(u64, u64)>,
}

impl Future for DurableWait {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = &mut *self;
        let (lsn, progress) = match &this.durable.0 {
            Promise::Pending { lsn, progress } => (*lsn, progress),
            Promise::Done | Promise::Failed(_) => {
                return Poll::Ready(this.durable.check().expect("done or failed is settled"))
            }
        };
        if progress.synced.load(Ordering::Acquire) >= lsn {
            // The round that passed the LSN took the registration out with it.
            this.registration = None;
            return Poll::Ready(Ok(()));
        }
        let mut waiting = progress.waiting.lock();
        if let Some(outcome) = SyncProgress::outcome_locked(&progress.synced, &waiting, lsn) {
            // Durable, or stopped: either way the list no longer holds this registration.
            this.registration = None;
            return Poll::Ready(outcome);
        }
        let key = *this.registration.get_or_insert_with(|| {
            waiting.next_registration += 1;
            (lsn, waiting.next_registration)
        });
        match waiting.wakers.get_mut(&key) {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            Some(waker) => waker.clone_from(cx.waker()),
            None => {
                waiting.wakers.insert(key, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for DurableWait {
    /// A wait given up before the write became durable leaves no waker behind.
    fn drop(&mut self) {
        if let (Some(key), Promise::Pending { progress, .. }) = (self.registration, &self.durable.0) {
            progress.waiting.lock().wakers.remove(&key);
        }
    }
}

/// Drive a future to completion on this thread, parking between polls. The waiting list wakes
/// us through the waker; no runtime is needed.
fn block_on<F: Future>(future: F) -> F::Output {
    use std::task::Wake;

    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }

    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        // Spurious unparks are fine: we just poll again.
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    #[derive(Default)]
    struct CountingWaker(AtomicU64);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    type Wait = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

    /// A wait on the write with this LSN, not yet polled.
    fn wait_on(lsn: u64, progress: &Arc<SyncProgress>) -> Wait {
        Box::pin(Durable::pending(lsn, progress.clone()).wait())
    }

    fn poll(fut: &mut Wait, waker: &Arc<CountingWaker>) -> Poll<Result<()>> {
        let waker = Waker::from(waker.clone());
        fut.as_mut().poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_round_wakes_only_the_writes_it_made_durable() {
        let progress = SyncProgress::new();
        let early = Arc::new(CountingWaker::default());
        let late = Arc::new(CountingWaker::default());
        let mut first = wait_on(3, &progress);
        let mut second = wait_on(7, &progress);
        assert!(poll(&mut first, &early).is_pending());
        assert!(poll(&mut second, &late).is_pending());

        progress.publish(5);
        assert_eq!((early.0.load(Ordering::SeqCst), late.0.load(Ordering::SeqCst)), (1, 0));
        assert!(matches!(poll(&mut first, &early), Poll::Ready(Ok(()))));
        assert!(poll(&mut second, &late).is_pending());
        // Polled again while waiting: still one registration, woken once.
        assert!(poll(&mut second, &late).is_pending());
        assert_eq!(progress.waiting.lock().wakers.len(), 1);

        progress.publish(7);
        assert_eq!(late.0.load(Ordering::SeqCst), 1);
        assert!(matches!(poll(&mut second, &late), Poll::Ready(Ok(()))));
        assert!(progress.waiting.lock().wakers.is_empty());
    }

    #[test]
    fn a_failed_or_closed_store_wakes_every_waiter_with_an_error() {
        let progress = SyncProgress::new();
        let waker = Arc::new(CountingWaker::default());
        let mut wait = wait_on(2, &progress);
        assert!(poll(&mut wait, &waker).is_pending());
        progress.fail(Arc::from("disk on fire"));
        assert_eq!(waker.0.load(Ordering::SeqCst), 1);
        match poll(&mut wait, &waker) {
            Poll::Ready(Err(StoreError::SyncFailed(why))) => assert_eq!(why, "disk on fire"),
            other => panic!("expected the failure, got {other:?}"),
        }
        // What was durable before the failure stays durable.
        progress.close();
        assert!(Durable::pending(0, progress.clone()).is_done());
        assert!(matches!(Durable::pending(9, progress.clone()).check(), Some(Err(_))));
        assert!(Durable::pending(9, progress).wait_blocking().is_err());
    }

    #[test]
    fn a_failed_write_fails_whatever_it_is_joined_with() {
        let progress = SyncProgress::new();
        let failed = Durable::failed(&StoreError::SyncFailed("no space".into()));
        assert!(matches!(failed.check(), Some(Err(StoreError::WriteFailed(_)))));
        assert!(
            failed.write_error().is_some() && Durable::pending(1, progress.clone()).write_error().is_none()
        );
        let joined = Durable::pending(5, progress.clone()).join(failed.clone());
        progress.publish(9);
        assert!(matches!(joined.check(), Some(Err(StoreError::WriteFailed(_)))));
        assert!(Durable::done().join(failed.clone()).wait_blocking().is_err());
        assert!(failed.join(Durable::done()).wait_blocking().is_err());
        // Joining good promises keeps the later one.
        assert_eq!(Durable::pending(3, progress.clone()).join(Durable::pending(8, progress)).lsn(), 8);
    }

    #[test]
    fn a_wait_given_up_leaves_nothing_behind() {
        let progress = SyncProgress::new();
        let waker = Arc::new(CountingWaker::default());
        let mut wait = wait_on(4, &progress);
        assert!(poll(&mut wait, &waker).is_pending());
        drop(wait);
        assert!(progress.waiting.lock().wakers.is_empty());
    }
}
