//! A budget for bytes held in partially received frames, shared by many connections.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Default [`PartialFrameBudget::allowance`]: 4 KiB per connection held without charge.
///
/// Large enough for any frame a miner sends (a share is under 100 bytes, SetupConnection at
/// most 1,291), so ordinary traffic never touches the shared counter.
pub const DEFAULT_PARTIAL_FRAME_ALLOWANCE: usize = 4 * 1024;

/// Bytes a set of connections may hold, together, in frames that have started to arrive but are
/// not complete: the defence against peers that declare a large frame and then send it slowly
/// or never finish it.
///
/// Each connection's codec (with [`Sv2Codec::with_budget`](crate::Sv2Codec::with_budget)) holds
/// a [`BudgetCharge`] from it. Whenever the codec stops to wait for more bytes, the bytes it
/// holds for the unfinished frame (in the read buffer and, for Noise, inside codec_sv2's
/// decoder) beyond [`Self::allowance`] are charged to the budget; when the frame completes, or
/// the codec fails or is dropped, the charge is returned. A charge that would take the total
/// past [`Self::limit`] is refused and the codec fails with
/// [`CodecError::BudgetExhausted`](crate::CodecError::BudgetExhausted): the connection whose
/// frame would grow past the budget is the one closed, and connections that stay within their
/// allowance (every miner) are never refused.
///
/// So the memory that unfinished frames pin across all connections sharing the budget is at
/// most `limit + connections * allowance` bytes (plus allocator slack: buffers grow by
/// doubling). Cloning shares the same budget. One atomic add per partial read, none for frames
/// that arrive whole.
#[derive(Clone)]
pub struct PartialFrameBudget {
    inner: Arc<Inner>,
}

struct Inner {
    limit: usize,
    allowance: usize,
    used: AtomicUsize,
}

impl PartialFrameBudget {
    /// A budget of `limit` bytes shared by every connection given a clone of it; each connection
    /// holds up to `allowance` bytes of an unfinished frame without charge.
    pub fn new(limit: usize, allowance: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                limit,
                allowance,
                used: AtomicUsize::new(0),
            }),
        }
    }

    /// The shared limit, in bytes.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Bytes per connection not charged to the budget.
    pub fn allowance(&self) -> usize {
        self.inner.allowance
    }

    /// Bytes currently charged, summed over all connections.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// A new, empty charge against this budget (one per connection).
    pub fn charge(&self) -> BudgetCharge {
        BudgetCharge {
            budget: self.clone(),
            charged: 0,
        }
    }
}

impl fmt::Debug for PartialFrameBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartialFrameBudget")
            .field("limit", &self.inner.limit)
            .field("allowance", &self.inner.allowance)
            .field("used", &self.used())
            .finish()
    }
}

/// One connection's share of a [`PartialFrameBudget`]; returned in full when dropped.
#[derive(Debug)]
pub struct BudgetCharge {
    budget: PartialFrameBudget,
    charged: usize,
}

/// The budget has no room for what a connection's unfinished frame needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetRefused {
    /// Bytes the connection's unfinished frame holds.
    pub held: usize,
    /// Bytes already charged by all connections sharing the budget.
    pub used: usize,
    /// The budget's limit, in bytes.
    pub limit: usize,
}

impl BudgetCharge {
    /// Sets this connection's holding to `held` bytes: charges (or returns) the part above the
    /// allowance. On refusal nothing changes; the caller closes the connection.
    pub fn set_held(&mut self, held: usize) -> Result<(), BudgetRefused> {
        let want = held.saturating_sub(self.budget.inner.allowance);
        if want == self.charged {
            return Ok(());
        }
        let used = &self.budget.inner.used;
        if want < self.charged {
            used.fetch_sub(self.charged - want, Ordering::Relaxed);
            self.charged = want;
            return Ok(());
        }
        let extra = want - self.charged;
        let limit = self.budget.inner.limit;
        used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
            u.checked_add(extra).filter(|&t| t <= limit)
        })
        .map_err(|u| BudgetRefused {
            held,
            used: u,
            limit,
        })?;
        self.charged = want;
        Ok(())
    }

    /// Bytes this connection has charged now.
    pub fn charged(&self) -> usize {
        self.charged
    }
}

impl Drop for BudgetCharge {
    fn drop(&mut self) {
        if self.charged > 0 {
            self.budget
                .inner
                .used
                .fetch_sub(self.charged, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn allowance_is_free_and_the_limit_is_shared() {
        let budget = PartialFrameBudget::new(1000, 100);
        let mut a = budget.charge();
        let mut b = budget.charge();
        a.set_held(100).unwrap();
        assert_eq!(budget.used(), 0);
        a.set_held(700).unwrap();
        assert_eq!(budget.used(), 600);
        b.set_held(500).unwrap();
        assert_eq!(budget.used(), 1000);
        let refused = b.set_held(501).unwrap_err();
        assert_eq!(
            refused,
            BudgetRefused {
                held: 501,
                used: 1000,
                limit: 1000
            }
        );
        assert_eq!(b.charged(), 400, "a refusal changes nothing");
        a.set_held(0).unwrap();
        assert_eq!(budget.used(), 400);
        b.set_held(1100).unwrap();
        drop(b);
        assert_eq!(budget.used(), 0, "dropping returns the charge");
    }
}
