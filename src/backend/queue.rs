//! A bounded, in-order queue between tasks: a `VecDeque` behind a mutex,
//! an [`AtomicWaker`] for its one receiver and a [`Notify`] for the senders
//! waiting for room.
//!
//! Used where a tokio mpsc channel costs more than it gives:
//! * the reply queue between a frontend session's reader and writer
//!   (`frontend.max_pipeline` entries). An mpsc channel allocates a block of
//!   32 slots up front and keeps it while the client is idle; this queue's
//!   storage is given back with [`Receiver::release`].
//! * a backend connection's request queue ("lane", `backend.queue_depth`
//!   entries), shared by every session's sender. A bounded mpsc channel
//!   locks its semaphore's mutex for every message received; here a batch
//!   is taken under one lock ([`Receiver::drain_into`]).
//! * the requests a backend connection has written and awaits replies for,
//!   registered a batch at a time ([`Sender::push_all`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

struct State<T> {
    items: VecDeque<T>,
    sender_gone: bool,
    receiver_gone: bool,
}

impl<T> State<T> {
    /// Why nothing could be taken from an empty queue.
    fn nothing(&self) -> TryRecvError {
        if self.sender_gone {
            TryRecvError::Disconnected
        } else {
            TryRecvError::Empty
        }
    }
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Woken when an item is queued into an empty queue or the sender is
    /// gone. (One receiver: a waker slot is two atomics where a `Notify`
    /// takes a lock and a list insert per wait.)
    readable: AtomicWaker,
    /// Signalled when a slot frees up or the receiver is gone.
    writable: Notify,
    capacity: usize,
    /// Whether a push wakes a waiting receiver (not for [`in_turn`]).
    wake_receiver: bool,
}

/// The sending end (one per queue; concurrent senders share it by
/// reference).
pub struct Sender<T>(Arc<Shared<T>>);

/// The receiving end.
pub struct Receiver<T>(Arc<Shared<T>>);

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("queue::Sender")
            .field("capacity", &self.0.capacity)
            .finish_non_exhaustive()
    }
}

/// A queue of at most `capacity` items.
pub fn queue<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    build(capacity, true)
}

/// A queue of at most `capacity` items whose receiver is polled in turn
/// after its sender, in the same task (a frontend session's reader, then
/// its writer): a push wakes nobody, and the receiver takes items with
/// [`Receiver::poll_in_turn`]. A wake-up here would only poll the task a
/// second time: once per request for a client that waits for each reply.
/// (The sender still waits, and is woken, when the queue is full.)
pub fn in_turn<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    build(capacity, false)
}

fn build<T>(capacity: usize, wake_receiver: bool) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            sender_gone: false,
            receiver_gone: false,
        }),
        readable: AtomicWaker::new(),
        writable: Notify::new(),
        capacity: capacity.max(1),
        wake_receiver,
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Shared<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // Nothing panics while holding the lock; recover the state anyway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a push (lock released): wakes the receiver, which waits only
    /// after finding the queue empty (never for an [`in_turn`] queue).
    fn pushed(&self, was_empty: bool) {
        if was_empty && self.wake_receiver {
            self.readable.wake();
        }
    }
}

impl<T> Sender<T> {
    /// Queues `item`, waiting while the queue is full. Gives the item back
    /// if the receiver is gone.
    pub async fn send(&self, item: T) -> Result<(), T> {
        let mut item = Some(item);
        self.until_done(|| match self.try_push(item.take()?) {
            Ok(done) => Some(done),
            Err(back) => {
                item = Some(back);
                None
            }
        })
        .await
    }

    /// Runs `attempt` until it is done (`Some`), waiting for room in the
    /// queue between tries.
    async fn until_done<R>(&self, mut attempt: impl FnMut() -> Option<R>) -> R {
        if let Some(done) = attempt() {
            return done;
        }
        loop {
            // Registered before looking again: room made between the look
            // and the wait is not missed, whatever the number of senders.
            let notified = self.0.writable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(done) = attempt() {
                return done;
            }
            notified.await;
        }
    }

    /// Queues every item of `items`, in order, as many as there is room for
    /// under each lock (one lock for all of them while the queue has room),
    /// waiting while it is full. False if the receiver is gone; the items
    /// not queued are then dropped with the iterator.
    pub async fn send_all(&self, items: impl Iterator<Item = T>) -> bool {
        let mut items = items.peekable();
        self.until_done(|| self.try_push_all(&mut items)).await
    }

    /// Pushes from `items` while there is room. `Some(true)` once all are
    /// queued, `Some(false)` if the receiver is gone, `None` if the queue
    /// filled up first.
    fn try_push_all<I: Iterator<Item = T>>(
        &self,
        items: &mut std::iter::Peekable<I>,
    ) -> Option<bool> {
        let mut s = self.0.lock();
        if s.receiver_gone {
            return Some(false);
        }
        let before = s.items.len();
        while s.items.len() < self.0.capacity {
            match items.next() {
                Some(item) => s.items.push_back(item),
                None => break,
            }
        }
        let pushed_any = s.items.len() > before;
        drop(s);
        if pushed_any {
            self.0.pushed(before == 0);
        }
        items.peek().is_none().then_some(true)
    }

    /// `Ok` with the outcome if the queue had room or the receiver is gone;
    /// `Err(item)` if it is full.
    fn try_push(&self, item: T) -> Result<Result<(), T>, T> {
        let mut s = self.0.lock();
        if s.receiver_gone {
            return Ok(Err(item));
        }
        if s.items.len() >= self.0.capacity {
            return Err(item);
        }
        let was_empty = s.items.is_empty();
        s.items.push_back(item);
        drop(s);
        self.0.pushed(was_empty);
        Ok(Ok(()))
    }

    /// Queues every item of `items` (emptying it) under one lock, whatever
    /// the capacity: for a producer bounded elsewhere. False, leaving
    /// `items` as it was, if the receiver is gone.
    pub fn push_all(&self, items: &mut Vec<T>) -> bool {
        if items.is_empty() {
            return true;
        }
        let mut s = self.0.lock();
        if s.receiver_gone {
            return false;
        }
        let was_empty = s.items.is_empty();
        s.items.extend(items.drain(..));
        drop(s);
        self.0.pushed(was_empty);
        true
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.lock().sender_gone = true;
        self.0.readable.wake();
    }
}

/// Why [`Receiver::try_recv`] returned nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing queued now.
    Empty,
    /// Nothing queued, and the sender is gone.
    Disconnected,
}

impl<T> Receiver<T> {
    /// The next item, if one is queued.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut s = self.0.lock();
        match s.items.pop_front() {
            Some(item) => {
                let was_full = s.items.len() + 1 >= self.0.capacity;
                drop(s);
                if was_full {
                    self.0.writable.notify_waiters();
                }
                Ok(item)
            }
            None => Err(s.nothing()),
        }
    }

    /// The next item, or `Pending` without registering a waker: for an
    /// [`in_turn`] queue, whose sender's task polls this after the sender
    /// (so an item pushed is seen in the same pass). `Ready(None)` once the
    /// sender is gone and the queue is drained.
    pub fn poll_in_turn(&self) -> std::task::Poll<Option<T>> {
        match self.try_recv() {
            Ok(item) => std::task::Poll::Ready(Some(item)),
            Err(TryRecvError::Disconnected) => std::task::Poll::Ready(None),
            Err(TryRecvError::Empty) => std::task::Poll::Pending,
        }
    }

    /// Moves every queued item to the end of `out` under one lock.
    /// `Err(Disconnected)` once the sender is gone and nothing was queued;
    /// `Err(Empty)` if nothing was.
    pub fn drain_into(&self, out: &mut VecDeque<T>) -> Result<(), TryRecvError> {
        let mut s = self.0.lock();
        if s.items.is_empty() {
            return Err(s.nothing());
        }
        let was_full = s.items.len() >= self.0.capacity;
        if out.is_empty() {
            // Swap storage instead of copying: both sides keep theirs warm.
            std::mem::swap(&mut s.items, out);
        } else {
            out.extend(s.items.drain(..));
        }
        drop(s);
        if was_full {
            self.0.writable.notify_waiters();
        }
        Ok(())
    }

    /// The next item; `None` once the sender is gone and the queue is
    /// drained. Keeps the storage (see [`Receiver::release`]). Cancel-safe:
    /// an item is taken only when this returns it.
    pub async fn recv(&self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Receiver::recv`] as a poll: registers the task to be woken by the
    /// next push into the empty queue.
    pub fn poll_recv(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
        use std::task::Poll;
        let ready = |r: Result<T, TryRecvError>| match r {
            Ok(item) => Some(Some(item)),
            Err(TryRecvError::Disconnected) => Some(None),
            Err(TryRecvError::Empty) => None,
        };
        if let Some(out) = ready(self.try_recv()) {
            return Poll::Ready(out);
        }
        self.0.readable.register(cx.waker());
        // Looked at again once registered: a push in between woke nobody.
        match ready(self.try_recv()) {
            Some(out) => Poll::Ready(out),
            None => Poll::Pending,
        }
    }
}

impl<T> Receiver<T> {
    /// Gives the storage back if nothing is queued (a frontend session going
    /// idle holds none).
    pub fn release(&self) {
        let mut s = self.0.lock();
        if s.items.is_empty() && s.items.capacity() > 0 {
            s.items = VecDeque::new();
        }
    }

    /// Stops receiving: queued items are dropped, and sends fail from now
    /// on (the sender learns the other side is gone).
    pub fn close(&self) {
        let mut s = self.0.lock();
        s.receiver_gone = true;
        s.items = VecDeque::new();
        drop(s);
        self.0.writable.notify_waiters();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Queued items (reply slots) are dropped now, not with the sender.
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn in_order_bounded_and_closing() {
        let (tx, rx) = queue::<u32>(2);
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        // Full: the third send waits until the receiver takes one.
        let third = tokio::spawn(async move {
            tx.send(3).await.unwrap();
            tx
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!third.is_finished());
        assert_eq!(rx.recv().await, Some(1));
        let tx = third.await.unwrap();
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(tx);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn send_all_queues_in_order_and_waits_for_room() {
        let (tx, rx) = queue::<u32>(3);
        tx.send(0).await.unwrap();
        assert!(tx.send_all(1..3).await);
        // Two more than there is room for: the rest waits for the receiver.
        let sending = tokio::spawn(async move {
            let done = tx.send_all(3..6).await;
            (tx, done)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sending.is_finished());
        let mut got = Vec::new();
        while got.len() < 6 {
            got.push(rx.recv().await.unwrap());
        }
        assert_eq!(got, [0, 1, 2, 3, 4, 5]);
        let (tx, done) = sending.await.unwrap();
        assert!(done);
        assert!(tx.send_all(std::iter::empty()).await);
        // A receiver gone mid-way: false, and nothing waits forever.
        tx.send_all(0..3).await;
        let blocked = tokio::spawn(async move { tx.send_all(3..5).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx);
        assert!(!blocked.await.unwrap());
    }

    #[tokio::test]
    async fn sender_learns_the_receiver_is_gone() {
        let (tx, rx) = queue::<u32>(1);
        tx.send(1).await.unwrap();
        let blocked = tokio::spawn(async move { tx.send(2).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx);
        assert_eq!(blocked.await.unwrap(), Err(2));
    }

    #[tokio::test]
    async fn storage_is_released_only_on_request_and_when_empty() {
        let (tx, rx) = queue::<u64>(64);
        for i in 0..10 {
            tx.send(i).await.unwrap();
        }
        while rx.try_recv().is_ok() {}
        // Waiting keeps the storage (the hot path reuses it)...
        let waiting = tokio::time::timeout(Duration::from_millis(10), rx.recv()).await;
        assert!(waiting.is_err());
        assert!(rx.0.lock().items.capacity() > 0);
        // ...release() gives it back, but only when empty.
        tx.send(2).await.unwrap();
        rx.release();
        assert!(rx.0.lock().items.capacity() > 0);
        assert_eq!(rx.try_recv(), Ok(2));
        rx.release();
        assert_eq!(rx.0.lock().items.capacity(), 0);
    }

    #[tokio::test]
    async fn batches_in_and_out_keep_order() {
        let (tx, rx) = queue::<u32>(usize::MAX);
        let mut batch = vec![1, 2, 3];
        assert!(tx.push_all(&mut batch));
        assert!(batch.is_empty());
        tx.send(4).await.unwrap();
        let mut out = VecDeque::from([0]);
        rx.drain_into(&mut out).unwrap();
        assert_eq!(out, [0, 1, 2, 3, 4]);
        assert_eq!(rx.drain_into(&mut out), Err(TryRecvError::Empty));
        // A batch wakes a receiver waiting on the empty queue.
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(tx.push_all(&mut vec![7, 8]));
        assert_eq!(waiter.await.unwrap(), Some(7));
        drop(tx);
    }

    #[tokio::test]
    async fn every_waiting_sender_gets_room_in_turn() {
        // A backend lane: many senders share one end.
        let (tx, rx) = queue::<u32>(2);
        let tx = Arc::new(tx);
        tx.send(0).await.unwrap();
        tx.send(0).await.unwrap();
        let blocked: Vec<_> = (1..=5)
            .map(|i| {
                let tx = tx.clone();
                tokio::spawn(async move { tx.send(i).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(blocked.iter().all(|b| !b.is_finished()));
        let mut got = Vec::new();
        let mut out = VecDeque::new();
        while got.len() < 7 {
            match rx.drain_into(&mut out) {
                Ok(()) => got.extend(out.drain(..)),
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        for b in blocked {
            b.await.unwrap().unwrap();
        }
        got.sort_unstable();
        assert_eq!(got, [0, 0, 1, 2, 3, 4, 5]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_items_across_threads_stay_in_order() {
        let (tx, rx) = queue::<u32>(16);
        let producer = tokio::spawn(async move {
            for i in 0..100_000 {
                tx.send(i).await.unwrap();
            }
        });
        let mut next = 0;
        while let Some(i) = rx.recv().await {
            assert_eq!(i, next);
            next += 1;
        }
        producer.await.unwrap();
        assert_eq!(next, 100_000);
    }
}
