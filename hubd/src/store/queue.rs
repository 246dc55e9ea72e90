//! The queue between the callers of [`super::StoreHandle`] and the writer
//! thread: writes are grouped into batches as they are queued, and the writer
//! takes a whole batch with one lock.
//!
//! It owns ordering (batches come out in the order their writes went in),
//! batch size (a batch is closed once it weighs `batch_max`) and backpressure
//! (callers wait, asynchronously, while `depth` worth of writes is queued).
//! Each batch carries one shared value `S` (the writer's answer to all its
//! callers) that every caller of the batch gets a handle to. It never runs SQL,
//! never blocks an async caller on anything but its short mutex, and never
//! loses an item silently: once closed it refuses new items and hands back
//! the batches still queued when it is abandoned.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::Notify;

/// Emptied batch buffers kept for reuse, so a batch costs no allocation.
const SPARE_BUFFERS: usize = 4;

/// A multi-producer queue drained one batch at a time by a blocking consumer.
#[derive(Debug)]
pub(super) struct Queue<T, S> {
    state: Mutex<State<T, S>>,
    /// The writer sleeps here while the queue is empty.
    work: Condvar,
    /// Callers sleep here while the queue is full.
    room: Notify,
    batch_max: usize,
    depth: usize,
}

#[derive(Debug)]
struct State<T, S> {
    /// Queued batches, oldest first; only the last one still takes items.
    batches: VecDeque<Open<T, S>>,
    /// Total weight queued.
    queued: usize,
    spare: Vec<Vec<T>>,
    closed: bool,
    /// The consumer is (about to be) waiting on `work`.
    consumer_asleep: bool,
    /// A caller found the queue full and waits on `room`.
    producer_waiting: bool,
}

/// A batch being filled.
#[derive(Debug)]
struct Open<T, S> {
    batch: Batch<T, S>,
    weight: usize,
}

/// A batch as the consumer takes it.
#[derive(Debug)]
pub(super) struct Batch<T, S> {
    /// The items, in the order they were queued.
    pub items: Vec<T>,
    /// The value shared with every caller of the batch.
    pub shared: Arc<S>,
    /// When its first item was queued.
    pub opened: Instant,
}

/// Where a queued item went: its batch's shared value and its place in it.
#[derive(Debug)]
pub(super) struct Ticket<S> {
    pub shared: Arc<S>,
    pub index: usize,
}

/// Why an item was not queued; the item comes back.
#[derive(Debug)]
pub(super) enum Refused<T> {
    /// The queue holds `depth` already: wait for room and try again.
    Full(T),
    /// The queue is closed: nothing more will be taken.
    Closed(T),
}

impl<T, S: Default> Queue<T, S> {
    /// A queue whose batches weigh at most `batch_max` (a single heavier item
    /// makes a batch of its own) and which holds about `depth` at most.
    pub(super) fn new(batch_max: usize, depth: usize) -> Queue<T, S> {
        Queue {
            state: Mutex::new(State {
                batches: VecDeque::new(),
                queued: 0,
                spare: Vec::new(),
                closed: false,
                consumer_asleep: false,
                producer_waiting: false,
            }),
            work: Condvar::new(),
            room: Notify::new(),
            batch_max: batch_max.max(1),
            depth: depth.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T, S>> {
        // Nothing in here panics while holding the lock, and the state stays
        // consistent if something did: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item` of `weight` (at least 1), waiting while the queue is
    /// full. Gives the item back once the queue is closed.
    pub(super) async fn push(&self, item: T, weight: usize) -> Result<Ticket<S>, T> {
        let mut item = match self.try_push(item, weight, false) {
            Ok(ticket) => return Ok(ticket),
            Err(Refused::Closed(item)) => return Err(item),
            Err(Refused::Full(item)) => item,
        };
        loop {
            // Registered before looking again, so the consumer's wake-up
            // cannot fall between the look and the wait.
            let room = self.room.notified();
            item = match self.try_push(item, weight, true) {
                Ok(ticket) => return Ok(ticket),
                Err(Refused::Closed(item)) => return Err(item),
                Err(Refused::Full(item)) => item,
            };
            room.await;
        }
    }

    /// Queues `item` if there is room. With `will_wait`, a full queue records
    /// that a caller waits for room.
    pub(super) fn try_push(
        &self,
        item: T,
        weight: usize,
        will_wait: bool,
    ) -> Result<Ticket<S>, Refused<T>> {
        let weight = weight.max(1);
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Closed(item));
        }
        // An item heavier than the whole depth still goes into an empty queue.
        if state.queued > 0 && state.queued + weight > self.depth {
            state.producer_waiting |= will_wait;
            return Err(Refused::Full(item));
        }
        state.queued += weight;
        let batch_max = self.batch_max;
        let ticket = match state
            .batches
            .back_mut()
            .filter(|open| open.weight + weight <= batch_max)
        {
            Some(open) => {
                open.batch.items.push(item);
                open.weight += weight;
                Ticket {
                    shared: Arc::clone(&open.batch.shared),
                    index: open.batch.items.len() - 1,
                }
            }
            None => {
                let mut items = state
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(batch_max.min(1024)));
                items.push(item);
                let shared = Arc::new(S::default());
                state.batches.push_back(Open {
                    batch: Batch {
                        items,
                        shared: Arc::clone(&shared),
                        opened: Instant::now(),
                    },
                    weight,
                });
                Ticket { shared, index: 0 }
            }
        };
        let wake = std::mem::take(&mut state.consumer_asleep);
        drop(state);
        if wake {
            self.work.notify_one();
        }
        Ok(ticket)
    }

    /// Takes the oldest batch, blocking while the queue is empty; `None` once
    /// the queue is closed and empty. `used` is an emptied batch buffer to reuse.
    pub(super) fn pop(&self, used: Vec<T>) -> Option<Batch<T, S>> {
        let mut state = self.lock();
        recycle(&mut state, used);
        loop {
            if let Some(Open { batch, weight }) = state.batches.pop_front() {
                state.queued -= weight;
                let wake = std::mem::take(&mut state.producer_waiting);
                drop(state);
                if wake {
                    self.room.notify_waiters();
                }
                return Some(batch);
            }
            if state.closed {
                return None;
            }
            state.consumer_asleep = true;
            state = self
                .work
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Keeps an emptied batch buffer for reuse.
    pub(super) fn recycle(&self, used: Vec<T>) {
        recycle(&mut self.lock(), used);
    }

    /// Refuses new items; those already queued are still taken by [`Queue::pop`].
    pub(super) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        drop(state);
        self.work.notify_all();
        self.room.notify_waiters();
    }

    /// Closes the queue and hands back the batches still queued (the consumer
    /// is gone and will take nothing more).
    pub(super) fn abandon(&self) -> Vec<Batch<T, S>> {
        let mut state = self.lock();
        state.closed = true;
        state.queued = 0;
        let left: Vec<_> = state.batches.drain(..).map(|open| open.batch).collect();
        drop(state);
        self.room.notify_waiters();
        left
    }
}

fn recycle<T, S>(state: &mut State<T, S>, mut used: Vec<T>) {
    used.clear();
    if used.capacity() > 0 && state.spare.len() < SPARE_BUFFERS {
        state.spare.push(used);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    type Q<T> = Queue<T, ()>;

    fn items<T>(batch: Option<Batch<T, ()>>) -> Option<Vec<T>> {
        batch.map(|b| b.items)
    }

    #[test]
    fn items_come_out_in_order_in_batches_of_at_most_batch_max() {
        let queue = Q::new(3, 100);
        for i in 0..7 {
            queue.try_push(i, 1, false).unwrap();
        }
        assert_eq!(items(queue.pop(Vec::new())), Some(vec![0, 1, 2]));
        assert_eq!(items(queue.pop(Vec::new())), Some(vec![3, 4, 5]));
        assert_eq!(items(queue.pop(Vec::new())), Some(vec![6]));
        // The next item starts a new batch after a partial one was taken.
        queue.try_push(7, 1, false).unwrap();
        assert_eq!(items(queue.pop(Vec::new())), Some(vec![7]));
    }

    #[test]
    fn callers_of_one_batch_share_its_value_and_learn_their_place() {
        let queue: Queue<char, ()> = Queue::new(2, 100);
        let a = queue.try_push('a', 1, false).unwrap();
        let b = queue.try_push('b', 1, false).unwrap();
        let c = queue.try_push('c', 1, false).unwrap();
        assert!(Arc::ptr_eq(&a.shared, &b.shared));
        assert!(!Arc::ptr_eq(&b.shared, &c.shared));
        assert_eq!((a.index, b.index, c.index), (0, 1, 0));
        let first = queue.pop(Vec::new()).unwrap();
        assert!(Arc::ptr_eq(&first.shared, &a.shared));
        assert_eq!(first.items, vec!['a', 'b']);
    }

    #[test]
    fn a_heavy_item_closes_the_batch_and_may_exceed_it_alone() {
        let queue = Q::new(4, 100);
        queue.try_push("a", 1, false).unwrap();
        queue.try_push("b", 3, false).unwrap();
        queue.try_push("c", 10, false).unwrap();
        queue.try_push("d", 1, false).unwrap();
        assert_eq!(items(queue.pop(Vec::new())), Some(vec!["a", "b"]));
        assert_eq!(items(queue.pop(Vec::new())), Some(vec!["c"]));
        assert_eq!(items(queue.pop(Vec::new())), Some(vec!["d"]));
    }

    #[test]
    fn a_full_queue_refuses_until_a_batch_is_taken() {
        let queue = Q::new(2, 4);
        for i in 0..4 {
            queue.try_push(i, 1, false).unwrap();
        }
        assert!(matches!(queue.try_push(4, 1, false), Err(Refused::Full(4))));
        assert_eq!(items(queue.pop(Vec::new())), Some(vec![0, 1]));
        queue.try_push(4, 1, false).unwrap();
        // An item heavier than the depth still goes into an empty queue.
        let queue = Q::new(2, 4);
        queue.try_push(9, 50, false).unwrap();
        assert_eq!(items(queue.pop(Vec::new())), Some(vec![9]));
    }

    #[test]
    fn closing_keeps_what_is_queued_and_refuses_the_rest() {
        let queue = Q::new(8, 100);
        queue.try_push(1, 1, false).unwrap();
        queue.close();
        assert!(matches!(
            queue.try_push(2, 1, false),
            Err(Refused::Closed(2))
        ));
        assert_eq!(items(queue.pop(Vec::new())), Some(vec![1]));
        assert_eq!(items(queue.pop(Vec::new())), None);
    }

    #[test]
    fn abandoning_hands_back_everything_queued() {
        let queue = Q::new(2, 100);
        for i in 0..5 {
            queue.try_push(i, 1, false).unwrap();
        }
        let left: Vec<_> = queue.abandon().into_iter().flat_map(|b| b.items).collect();
        assert_eq!(left, vec![0, 1, 2, 3, 4]);
        assert!(matches!(
            queue.try_push(5, 1, false),
            Err(Refused::Closed(5))
        ));
        assert_eq!(items(queue.pop(Vec::new())), None);
    }

    #[test]
    fn a_sleeping_consumer_wakes_for_the_first_item_and_for_close() {
        let queue = Arc::new(Q::new(8, 100));
        let consumer = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(batch) = queue.pop(Vec::new()) {
                    got.extend(batch.items);
                }
                got
            })
        };
        for i in 0..100 {
            queue.try_push(i, 1, false).unwrap();
        }
        queue.close();
        let got = consumer.join().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_waiting_for_room_gets_in_once_a_batch_is_taken() {
        let queue = Arc::new(Q::new(2, 2));
        queue.try_push(0, 1, false).unwrap();
        queue.try_push(1, 1, false).unwrap();
        let waiting = {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move { queue.push(2, 1).await })
        };
        // The consumer runs on its own thread, as the writer does.
        let consumer = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(batch) = queue.pop(Vec::new()) {
                    got.extend(batch.items);
                    if got.len() == 3 {
                        break;
                    }
                }
                got
            })
        };
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiting caller got in")
            .unwrap()
            .unwrap();
        let got = tokio::task::spawn_blocking(move || consumer.join().unwrap())
            .await
            .unwrap();
        assert_eq!(got, vec![0, 1, 2]);
    }

    #[tokio::test]
    async fn a_caller_waiting_for_room_is_refused_when_the_queue_closes() {
        let queue = Arc::new(Q::new(1, 1));
        queue.try_push(0, 1, false).unwrap();
        let waiting = {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move { queue.push(1, 1).await })
        };
        tokio::task::yield_now().await;
        queue.close();
        let refused = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiting caller was answered")
            .unwrap();
        assert!(matches!(refused, Err(1)));
    }
}
