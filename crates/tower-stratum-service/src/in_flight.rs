//! The calls a connection has in the inbound stack, answered in the order they were made.
//!
//! Like `futures_util::stream::FuturesOrdered`, without two of its costs on this path (measured
//! with `benches/round_trip.rs`, see docs/PERFORMANCE.md): `FuturesUnordered` wakes its own task
//! again whenever it has polled every future once and all are pending (a yield meant for large
//! sets), i.e. once per message here, and it allocates a task node per future. A connection has
//! a handful of calls at most (`max_in_flight`), so every poll simply polls each unfinished one
//! with the connection task's own waker, and the boxes of finished calls are emptied (the future
//! is dropped at once, with its tracing span) and reused for the next ones (`Pin::set`), so
//! steady traffic allocates nothing here.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Unfinished calls and finished answers not yet taken, oldest first.
pub(crate) struct InFlight<F: Future> {
    queue: VecDeque<Slot<F>>,
    /// Emptied boxes of finished calls, ready to hold the next ones.
    spare: Vec<Pin<Box<Option<F>>>>,
}

enum Slot<F: Future> {
    /// Always `Some` while in the queue.
    Running(Pin<Box<Option<F>>>),
    Done(F::Output),
}

impl<F: Future> InFlight<F> {
    pub(crate) fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            spare: Vec::new(),
        }
    }

    /// Calls outstanding, finished or not, whose answers have not been taken.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Adds the newest call.
    pub(crate) fn push_back(&mut self, f: F) {
        let boxed = match self.spare.pop() {
            Some(mut b) => {
                b.as_mut().set(Some(f));
                b
            }
            None => Box::pin(Some(f)),
        };
        self.queue.push_back(Slot::Running(boxed));
    }

    /// Polls every unfinished call; `Ready(Some(answer))` when the oldest has finished,
    /// `Ready(None)` when there is none.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        for slot in self.queue.iter_mut() {
            let Slot::Running(b) = slot else { continue };
            let Some(f) = b.as_mut().as_pin_mut() else {
                continue;
            };
            if let Poll::Ready(out) = f.poll(cx) {
                if let Slot::Running(mut b) = std::mem::replace(slot, Slot::Done(out)) {
                    b.as_mut().set(None);
                    self.spare.push(b);
                }
            }
        }
        match self.queue.front() {
            None => Poll::Ready(None),
            Some(Slot::Done(_)) => match self.queue.pop_front() {
                Some(Slot::Done(out)) => Poll::Ready(Some(out)),
                _ => Poll::Pending,
            },
            Some(_) => Poll::Pending,
        }
    }

    /// The next answer, in call order (see [`InFlight::poll_next`]).
    pub(crate) fn next(&mut self) -> impl Future<Output = Option<F::Output>> + '_ {
        std::future::poll_fn(move |cx| self.poll_next(cx))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use futures_util::FutureExt;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn answers_in_call_order_and_boxes_are_reused() {
        let mut q = InFlight::new();
        let mut senders = Vec::new();
        for _ in 0..4 {
            let (tx, rx) = oneshot::channel::<u32>();
            senders.push(tx);
            q.push_back(rx);
        }
        assert_eq!(q.len(), 4);
        // The newest finishes first: nothing comes out until the oldest has.
        senders.pop().unwrap().send(3).unwrap();
        assert!(q.next().now_or_never().is_none());
        assert_eq!(q.spare.len(), 1);
        for (i, tx) in senders.into_iter().enumerate() {
            tx.send(i as u32).unwrap();
        }
        for expected in 0..4u32 {
            assert_eq!(q.next().await.unwrap().unwrap(), expected);
        }
        assert!(q.is_empty());
        assert_eq!(q.next().await, None);
        // Every box is back; the next calls take them instead of allocating.
        assert_eq!(q.spare.len(), 4);
        let (tx, rx) = oneshot::channel::<u32>();
        q.push_back(rx);
        assert_eq!(q.spare.len(), 3);
        tx.send(9).unwrap();
        assert_eq!(q.next().await.unwrap().unwrap(), 9);
    }
}
