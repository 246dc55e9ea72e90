//! The answer to one batch's callers: filled once, after the batch's
//! transaction committed (or failed), and read by every caller of the batch.
//!
//! One shared answer per batch instead of a channel per write: waiting costs a
//! caller a short lock and a waker, no allocation, and answering a batch is
//! one lock and a wake-up per waiting caller. It never blocks and never
//! answers twice; a batch dropped unanswered (the writer died) answers every
//! caller [`StoreError::WriterGone`] instead of leaving it waiting.

use std::future::poll_fn;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use super::StoreError;
use super::writer::Receipt;

/// What one batch's transaction produced, for all of its callers.
#[derive(Debug, Default)]
pub(super) struct Answer {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    outcome: Outcome,
    /// Callers waiting for the outcome.
    waiting: Vec<Waker>,
}

#[derive(Debug, Default)]
enum Outcome {
    #[default]
    Pending,
    Done(Results),
    /// Nobody will answer: the writer is gone.
    Gone,
}

/// What a batch's transaction produced, item by item. Compact (a few bytes
/// an item when nothing failed): every caller of the batch reads it.
#[derive(Debug, Default)]
pub(super) struct Results {
    /// Every item's receipts, item after item.
    pub receipts: Vec<Receipt>,
    /// Where each item's receipts end in `receipts`, item by item.
    pub ends: Vec<usize>,
    /// The items that failed and why (their receipts are empty); each error
    /// is taken by its caller.
    pub failed: Vec<(usize, StoreError)>,
}

impl Results {
    /// Room for `items` items with `receipts` receipts in all.
    pub(super) fn with_capacity(items: usize, receipts: usize) -> Results {
        Results {
            receipts: Vec::with_capacity(receipts),
            ends: Vec::with_capacity(items),
            failed: Vec::new(),
        }
    }

    /// Item `index`'s receipts, or its error.
    fn take(&mut self, index: usize) -> Result<&[Receipt], StoreError> {
        if let Some(at) = self.failed.iter().position(|(i, _)| *i == index) {
            return Err(self.failed.swap_remove(at).1);
        }
        let start = match index.checked_sub(1) {
            Some(previous) => self.ends.get(previous).copied(),
            None => Some(0),
        };
        start
            .zip(self.ends.get(index).copied())
            .and_then(|(start, end)| self.receipts.get(start..end))
            .ok_or(StoreError::WriterGone)
    }
}

impl Answer {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers the batch and wakes its waiting callers. Only the first
    /// answer counts.
    pub(super) fn complete(&self, results: Results) {
        self.settle(Outcome::Done(results));
    }

    /// Answers every caller of the batch `WriterGone`, unless it was answered.
    pub(super) fn abandon(&self) {
        self.settle(Outcome::Gone);
    }

    fn settle(&self, outcome: Outcome) {
        let mut state = self.lock();
        if !matches!(state.outcome, Outcome::Pending) {
            return;
        }
        state.outcome = outcome;
        let waiting = std::mem::take(&mut state.waiting);
        drop(state);
        for waker in waiting {
            waker.wake();
        }
    }

    /// Waits for the answer to item `index` of the batch and hands its result
    /// (its receipts, or its error) to `take`.
    pub(super) async fn wait<R>(
        &self,
        index: usize,
        take: impl FnOnce(Result<&[Receipt], StoreError>) -> R,
    ) -> R {
        let mut take = Some(take);
        // Where this caller's waker is in `waiting`, once registered.
        let mut registered: Option<usize> = None;
        poll_fn(|cx| {
            let mut guard = self.lock();
            let state = &mut *guard;
            let result = match &mut state.outcome {
                Outcome::Pending => {
                    match registered.and_then(|i| state.waiting.get_mut(i)) {
                        Some(waker) => waker.clone_from(cx.waker()),
                        None => {
                            registered = Some(state.waiting.len());
                            state.waiting.push(cx.waker().clone());
                        }
                    }
                    return Poll::Pending;
                }
                Outcome::Done(results) => results.take(index),
                Outcome::Gone => Err(StoreError::WriterGone),
            };
            match take.take() {
                Some(take) => Poll::Ready(take(result)),
                // Polled again after it was ready: a caller's bug, never ours.
                None => Poll::Pending,
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn receipt(seq: u64) -> Receipt {
        Receipt { seq: Some(seq) }
    }

    #[tokio::test]
    async fn every_caller_gets_its_own_result_once_the_batch_is_answered() {
        let answer = Arc::new(Answer::default());
        let waiters: Vec<_> = (0..3)
            .map(|index| {
                let answer = Arc::clone(&answer);
                tokio::spawn(async move {
                    answer
                        .wait(index, |result| result.map(<[Receipt]>::to_vec))
                        .await
                })
            })
            .collect();
        tokio::task::yield_now().await;
        answer.complete(Results {
            receipts: vec![receipt(7), receipt(8), receipt(9)],
            ends: vec![1, 1, 3],
            failed: vec![(1, StoreError::DiskFull("no space".into()))],
        });
        let mut got = Vec::new();
        for waiter in waiters {
            got.push(
                tokio::time::timeout(Duration::from_secs(10), waiter)
                    .await
                    .expect("answered")
                    .unwrap(),
            );
        }
        assert_eq!(got[0].as_ref().unwrap(), &vec![receipt(7)]);
        assert!(
            matches!(got[1], Err(StoreError::DiskFull(_))),
            "{:?}",
            got[1]
        );
        assert_eq!(got[2].as_ref().unwrap(), &vec![receipt(8), receipt(9)]);
        // A caller that comes after the answer gets it at once; only the first answer counts.
        answer.abandon();
        let late = answer
            .wait(2, |result| result.map(<[Receipt]>::to_vec))
            .await;
        assert_eq!(late.unwrap(), vec![receipt(8), receipt(9)]);
        // An index the batch does not have is an error, not a panic.
        let missing = answer
            .wait(3, |result| result.map(<[Receipt]>::to_vec))
            .await;
        assert!(
            matches!(missing, Err(StoreError::WriterGone)),
            "{missing:?}"
        );
    }

    #[tokio::test]
    async fn an_abandoned_batch_answers_writer_gone() {
        let answer = Arc::new(Answer::default());
        let waiter = {
            let answer = Arc::clone(&answer);
            tokio::spawn(async move {
                answer
                    .wait(0, |result| result.map(<[Receipt]>::to_vec))
                    .await
            })
        };
        tokio::task::yield_now().await;
        answer.abandon();
        let result = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("answered")
            .unwrap();
        assert!(matches!(result, Err(StoreError::WriterGone)), "{result:?}");
        // Completing afterwards changes nothing.
        answer.complete(Results {
            receipts: vec![receipt(1)],
            ends: vec![1],
            failed: Vec::new(),
        });
        let again = answer
            .wait(0, |result| result.map(<[Receipt]>::to_vec))
            .await;
        assert!(matches!(again, Err(StoreError::WriterGone)), "{again:?}");
    }
}
