//! Ordered settlement for log brokers (Kafka): records of a partition are
//! read in offset order but settle in any order, since different keys are
//! delivered concurrently. The partition may be committed only up to its
//! lowest unsettled offset, so a crash redelivers everything not settled
//! and skips nothing.

use std::collections::BTreeSet;

/// One partition's offsets in flight.
#[derive(Debug, Default)]
pub struct Watermark {
    unsettled: BTreeSet<i64>,
    /// One past the highest offset read.
    next: Option<i64>,
    /// The last offset handed out by [`Watermark::to_commit`].
    committed: Option<i64>,
}

impl Watermark {
    /// A record read; offsets are read in increasing order (with gaps,
    /// where the log was compacted or held transaction markers).
    pub fn read(&mut self, offset: i64) {
        self.unsettled.insert(offset);
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// A record delivered or dead-lettered. A record to be redelivered is
    /// never settled: the watermark stays below it.
    pub fn settle(&mut self, offset: i64) {
        self.unsettled.remove(&offset);
    }

    /// The offset to commit (the next one to read after a restart): the
    /// lowest unsettled offset, or one past the last read when all have settled.
    pub fn committable(&self) -> Option<i64> {
        self.unsettled.first().copied().or(self.next)
    }

    /// [`Watermark::committable`] when it has moved since the last commit.
    pub fn to_commit(&mut self) -> Option<i64> {
        let offset = self.committable().filter(|o| Some(*o) != self.committed)?;
        self.committed = Some(offset);
        Some(offset)
    }

    /// Records read and not settled.
    pub fn in_flight(&self) -> usize {
        self.unsettled.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_up_to_the_lowest_unsettled_offset() {
        let mut w = Watermark::default();
        assert_eq!(w.to_commit(), None, "nothing read, nothing to commit");
        for offset in [10, 11, 12, 14] {
            w.read(offset); // 13 was compacted away
        }
        assert_eq!(w.committable(), Some(10));
        w.settle(12);
        w.settle(11);
        assert_eq!(w.committable(), Some(10), "10 is still in flight: a crash must redeliver it");
        w.settle(10);
        assert_eq!(w.to_commit(), Some(14));
        assert_eq!(w.to_commit(), None, "unchanged since the last commit");
        w.settle(14);
        assert_eq!(w.to_commit(), Some(15), "all settled: one past the last read");
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn a_record_left_for_redelivery_holds_the_watermark() {
        let mut w = Watermark::default();
        for offset in 0..100 {
            w.read(offset);
        }
        // Completions in a scrambled order; 37 is never settled.
        let mut order: Vec<i64> = (0..100).filter(|o| *o != 37).collect();
        order.sort_by_key(|o| (o * 7919) % 101);
        for (i, offset) in order.iter().enumerate() {
            w.settle(*offset);
            let lowest_open = (0..100).find(|o| !order[..=i].contains(o)).unwrap();
            assert_eq!(w.committable(), Some(lowest_open));
        }
        assert_eq!(w.committable(), Some(37));
        assert_eq!(w.in_flight(), 1);
    }
}
