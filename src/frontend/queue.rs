//! The reply queue between a session's reader and its writer: bounded (the
//! reader waits when `max_pipeline` slots are queued), strictly in order,
//! and holding no memory while empty.
//!
//! It replaces a tokio mpsc channel, which allocates a block of 32 slots per
//! channel up front (about 7 KB per client here) and keeps it while the
//! client is idle. This queue is a `VecDeque` behind a mutex that only the
//! session's two tasks touch; its storage is released whenever the writer
//! finds it empty.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

struct State<T> {
    items: VecDeque<T>,
    sender_gone: bool,
    receiver_gone: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Signalled when an item is queued or the sender is gone.
    readable: Notify,
    /// Signalled when a slot frees up or the receiver is gone.
    writable: Notify,
    capacity: usize,
}

/// The reader's end.
pub struct Sender<T>(Arc<Shared<T>>);

/// The writer's end.
pub struct Receiver<T>(Arc<Shared<T>>);

/// A queue of at most `capacity` items.
pub fn queue<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            sender_gone: false,
            receiver_gone: false,
        }),
        readable: Notify::new(),
        writable: Notify::new(),
        capacity: capacity.max(1),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Shared<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // Nothing panics while holding the lock; recover the state anyway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T> Sender<T> {
    /// Queues `item`, waiting while the queue is full. Gives the item back
    /// if the receiver is gone.
    pub async fn send(&self, item: T) -> Result<(), T> {
        loop {
            {
                let mut s = self.0.lock();
                if s.receiver_gone {
                    return Err(item);
                }
                if s.items.len() < self.0.capacity {
                    s.items.push_back(item);
                    drop(s);
                    self.0.readable.notify_one();
                    return Ok(());
                }
            }
            // A notification sent between the check and here is kept as a
            // permit (one waiter per side), so none is lost.
            self.0.writable.notified().await;
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.lock().sender_gone = true;
        self.0.readable.notify_one();
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
        self.take(false)
    }

    fn take(&self, release: bool) -> Result<T, TryRecvError> {
        let mut s = self.0.lock();
        match s.items.pop_front() {
            Some(item) => {
                let was_full = s.items.len() + 1 == self.0.capacity;
                drop(s);
                if was_full {
                    self.0.writable.notify_one();
                }
                Ok(item)
            }
            None => {
                if release && s.items.capacity() > 0 {
                    s.items = VecDeque::new();
                }
                if s.sender_gone {
                    Err(TryRecvError::Disconnected)
                } else {
                    Err(TryRecvError::Empty)
                }
            }
        }
    }

    /// The next item; `None` once the sender is gone and the queue is
    /// drained. Before waiting, an empty queue gives its storage back, so an
    /// idle client holds none. Cancel-safe: an item is taken only when this
    /// returns it.
    pub async fn recv(&self) -> Option<T> {
        loop {
            match self.take(true) {
                Ok(item) => return Some(item),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => self.0.readable.notified().await,
            }
        }
    }
}

impl<T> Receiver<T> {
    /// Gives the storage back if nothing is queued (the writer's phase is
    /// ending and will not wait in [`Receiver::recv`], which does this).
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
        self.0.writable.notify_one();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.receiver_gone = true;
        // Queued items (reply slots) are dropped now, not with the sender.
        s.items = VecDeque::new();
        drop(s);
        self.0.writable.notify_one();
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
    async fn sender_learns_the_receiver_is_gone() {
        let (tx, rx) = queue::<u32>(1);
        tx.send(1).await.unwrap();
        let blocked = tokio::spawn(async move { tx.send(2).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx);
        assert_eq!(blocked.await.unwrap(), Err(2));
    }

    #[tokio::test]
    async fn empty_queue_releases_its_storage() {
        let (tx, rx) = queue::<u64>(64);
        for i in 0..10 {
            tx.send(i).await.unwrap();
        }
        while rx.try_recv().is_ok() {}
        assert!(rx.0.lock().items.capacity() > 0);
        tx.send(1).await.unwrap();
        assert_eq!(rx.recv().await, Some(1));
        // Waiting on an empty queue releases it.
        let waiting = tokio::time::timeout(Duration::from_millis(10), rx.recv()).await;
        assert!(waiting.is_err());
        assert_eq!(rx.0.lock().items.capacity(), 0);
        // So does release(), but only when empty.
        tx.send(2).await.unwrap();
        rx.release();
        assert!(rx.0.lock().items.capacity() > 0);
        assert_eq!(rx.try_recv(), Ok(2));
        rx.release();
        assert_eq!(rx.0.lock().items.capacity(), 0);
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
