//! A record's way from the retrieval to the processor: Kinesis records are unpacked (KPL), the
//! part a checkpoint inside an aggregate already covers is dropped, and user records are grouped
//! into `process_records` calls by the batching window. Done here once, whatever the retrieval.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::aggregation::{DeaggregationReport, Deaggregator};
use crate::model::{ChildShard, ExtendedSequenceNumber, Record, SequenceNumber};
use crate::retrieval::{RecordsBatch, RecordsPublisher, RetrievalError, TrimmedGap};

/// How records are grouped into `process_records` calls (Lambda's batching window).
///
/// A call is made once `max_records` user records or `max_bytes` of data are waiting, or
/// `max_wait` after the first of them arrived, whichever comes first; it carries at most
/// `max_records` records and (unless one record alone is larger) `max_bytes` bytes. Records
/// accumulate across reads. The last records of a closed shard are delivered at once, the
/// final call with `is_at_shard_end`. Checkpoints stay exact: the checkpointer's position is
/// the last record of the call, sub-sequence included.
///
/// The default, [`BatchingWindow::PER_READ`], delivers each read as it comes (a GetRecords
/// response, a fan-out event), as the KCL does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchingWindow {
    /// Most user records per call (at least 1).
    pub max_records: usize,
    /// Most bytes of record data per call (at least 1); a larger record goes alone.
    pub max_bytes: usize,
    /// Longest a record waits for others before its call is made.
    pub max_wait: Duration,
}

impl BatchingWindow {
    /// Sets [`max_records`](Self::max_records).
    pub fn with_max_records(mut self, max_records: usize) -> Self {
        self.max_records = max_records;
        self
    }

    /// Sets [`max_bytes`](Self::max_bytes).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets [`max_wait`](Self::max_wait).
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }
}

impl BatchingWindow {
    /// Each read delivered as it comes, however large.
    pub const PER_READ: Self = Self {
        max_records: usize::MAX,
        max_bytes: usize::MAX,
        max_wait: Duration::ZERO,
    };

    /// Up to `max_records` records, `max_bytes` bytes, waiting at most `max_wait`.
    pub fn new(max_records: usize, max_bytes: usize, max_wait: Duration) -> Self {
        Self {
            max_records,
            max_bytes,
            max_wait,
        }
    }

    /// Checks the settings; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_records == 0 || self.max_bytes == 0 {
            return Err("batching window max_records and max_bytes must be at least 1".into());
        }
        if self.max_wait > crate::limits::MAX_SETTING_DURATION {
            return Err(format!(
                "batching window max_wait {:?} is longer than a year",
                self.max_wait
            ));
        }
        Ok(())
    }
}

impl Default for BatchingWindow {
    fn default() -> Self {
        Self::PER_READ
    }
}

/// One `process_records` call's worth.
#[derive(Debug, Default)]
pub(crate) struct Delivered {
    pub(crate) records: Vec<Record>,
    pub(crate) millis_behind_latest: u64,
    /// Set on the last call of a closed shard.
    pub(crate) shard_end: Option<Vec<ChildShard>>,
}

/// How long after the bound a read at the tip must come back to prove that nothing before the
/// bound is still to come: covers a put in flight at the bound.
const TIP_MARGIN: Duration = Duration::from_secs(1);

impl Delivered {
    /// Drops the records that arrived at or after `bound` (a bounded run, see
    /// `crate::scheduler::StopAt`). Returns whether the shard has reached the bound: a record
    /// was dropped, or the read was at the tip past the margin (`now` is when the batch came
    /// back).
    pub(crate) fn cut(&mut self, bound: SystemTime, now: SystemTime) -> bool {
        let batch = self;
        if let Some(at) = batch
            .records
            .iter()
            .position(|r| r.approximate_arrival_timestamp >= bound)
        {
            batch.records.truncate(at);
            // The shard's end lies beyond the bound: its children are not needed.
            batch.shard_end = None;
            return true;
        }
        batch.shard_end.is_none()
            && batch.millis_behind_latest == 0
            && now.duration_since(bound).is_ok_and(|d| d >= TIP_MARGIN)
    }
}

pub(crate) struct Delivery {
    publisher: Box<dyn RecordsPublisher>,
    deaggregator: Deaggregator,
    /// A checkpoint inside an aggregate: user records up to it were processed already.
    resume: Option<ExtendedSequenceNumber>,
    /// The sequence checkpoint the first read must start with; a later first record means it
    /// was trimmed (Kinesis answers a trimmed position from its oldest record, silently).
    verify: Option<SequenceNumber>,
    /// The read that found a trimmed gap, held until the consumer decides.
    held: Option<RecordsBatch>,
    /// An error to return once what is buffered was delivered.
    failed: Option<RetrievalError>,
    /// The last user record buffered, so a restarted publisher's repeats are dropped.
    last_buffered: Option<ExtendedSequenceNumber>,
    window: BatchingWindow,
    buffer: VecDeque<Record>,
    buffered_bytes: usize,
    /// When the oldest buffered record's call is due.
    due: Option<Instant>,
    behind: u64,
    /// The shard's end was read: deliver what is buffered, then this.
    shard_end: Option<Vec<ChildShard>>,
    report: DeaggregationReport,
}

impl Delivery {
    pub(crate) fn new(
        publisher: Box<dyn RecordsPublisher>,
        deaggregator: Deaggregator,
        checkpoint: &ExtendedSequenceNumber,
        window: BatchingWindow,
    ) -> Self {
        Self {
            publisher,
            deaggregator,
            resume: matches!(checkpoint, ExtendedSequenceNumber::Sequence { .. })
                .then(|| checkpoint.clone()),
            verify: checkpoint.sequence().cloned(),
            held: None,
            failed: None,
            last_buffered: None,
            window,
            buffer: VecDeque::new(),
            buffered_bytes: 0,
            due: None,
            behind: 0,
            shard_end: None,
            report: DeaggregationReport::default(),
        }
    }

    /// Nothing is waiting to be delivered.
    pub(crate) fn is_empty(&self) -> bool {
        self.buffer.is_empty() && self.shard_end.is_none()
    }

    /// What unpacking found since the last call, reset.
    pub(crate) fn take_report(&mut self) -> DeaggregationReport {
        std::mem::take(&mut self.report)
    }

    /// The next call's records. Cancel-safe: what was read stays buffered in `self`.
    ///
    /// A trimmed gap is [`RetrievalError::Trimmed`], returned after the records read before it
    /// were delivered; then either [`pass_gap`](Self::pass_gap) continues past it or the
    /// delivery is dropped.
    pub(crate) async fn next(&mut self) -> Result<Delivered, RetrievalError> {
        loop {
            if let Some(call) = self.ready(Instant::now()) {
                return Ok(call);
            }
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            let read = match self.due {
                Some(at) => match tokio::time::timeout_at(at, self.publisher.next_batch()).await {
                    Ok(read) => read,
                    Err(_) => continue,
                },
                None => self.publisher.next_batch().await,
            };
            let read = match read {
                Ok(read) => read,
                Err(e @ RetrievalError::Trimmed(_)) => {
                    // Deliver what was read before the gap first.
                    self.failed = Some(e);
                    if !self.buffer.is_empty() {
                        self.due = Some(Instant::now());
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(gap) = self.trimmed(&read) {
                self.held = Some(read);
                return Err(RetrievalError::Trimmed(gap));
            }
            self.add(read);
        }
    }

    /// The gap the first read shows, if the checkpoint's record is gone: a later record comes
    /// first, or a closed shard ends without it (everything after it was trimmed).
    fn trimmed(&mut self, read: &RecordsBatch) -> Option<TrimmedGap> {
        let Some(first) = read.records.first() else {
            let expected = self.verify.take_if(|_| read.shard_end.is_some())?;
            return Some(TrimmedGap::reported(
                Some(expected),
                "the shard ended without the checkpoint's record: everything after it was trimmed",
            ));
        };
        let expected = self.verify.take()?;
        (first.sequence_number > expected).then(|| {
            TrimmedGap::found(
                expected,
                first.sequence_number.clone(),
                first.approximate_arrival_timestamp,
            )
        })
    }

    /// Continues past a trimmed gap: with the read that found it, or, when the source failed
    /// the read, with a publisher from `restart` (reading from the trim horizon). Records
    /// already buffered are not repeated.
    pub(crate) fn pass_gap(&mut self, restart: impl FnOnce() -> Box<dyn RecordsPublisher>) {
        self.verify = None;
        match self.held.take() {
            Some(read) => self.add(read),
            None => {
                self.publisher = restart();
                if let Some(last) = &self.last_buffered {
                    self.resume = Some(last.clone());
                }
            }
        }
    }

    fn add(&mut self, read: RecordsBatch) {
        let mut records = Vec::with_capacity(read.records.len());
        self.report += self
            .deaggregator
            .deaggregate_into(read.records, &mut records);
        if let Some(resume) = &self.resume {
            records.retain(|r| r.extended_sequence_number() > *resume);
            // Records come in order: once one is past the checkpoint, all later ones are.
            if !records.is_empty() {
                self.resume = None;
            }
        }
        self.behind = read.millis_behind_latest;
        if let Some(last) = records.last() {
            self.last_buffered = Some(last.extended_sequence_number());
        }
        if self.buffer.is_empty() && !records.is_empty() {
            self.due = Some(Instant::now() + self.window.max_wait);
        }
        self.buffered_bytes += records.iter().map(|r| r.data.len()).sum::<usize>();
        self.buffer.extend(records);
        if read.shard_end.is_some() {
            self.shard_end = read.shard_end;
        }
    }

    fn ready(&mut self, now: Instant) -> Option<Delivered> {
        let full = self.buffer.len() >= self.window.max_records
            || self.buffered_bytes >= self.window.max_bytes;
        let due = self.due.is_some_and(|at| now >= at);
        if !(full || due || self.shard_end.is_some()) {
            return None;
        }
        let mut records = Vec::new();
        let mut bytes = 0;
        while let Some(next) = self.buffer.front() {
            let len = next.data.len();
            if records.len() == self.window.max_records
                || (!records.is_empty() && bytes + len > self.window.max_bytes)
            {
                break;
            }
            bytes += len;
            records.extend(self.buffer.pop_front());
        }
        self.buffered_bytes -= bytes;
        let shard_end = if self.buffer.is_empty() {
            self.due = None;
            self.shard_end.take()
        } else {
            None
        };
        Some(Delivered {
            records,
            millis_behind_latest: self.behind,
            shard_end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use bytes::Bytes;

    use crate::aggregation::Aggregator;
    use crate::model::SequenceNumber;

    /// Hands out scripted reads, then waits for ever.
    struct Script(VecDeque<(Duration, RecordsBatch)>);

    #[async_trait]
    impl RecordsPublisher for Script {
        async fn next_batch(&mut self) -> Result<RecordsBatch, RetrievalError> {
            match self.0.pop_front() {
                Some((after, read)) => {
                    tokio::time::sleep(after).await;
                    Ok(read)
                }
                None => std::future::pending().await,
            }
        }
    }

    fn record(seq: u128, bytes: usize) -> Record {
        Record::new(
            SequenceNumber::from_u128(seq),
            format!("k{seq}"),
            Bytes::from(vec![b'x'; bytes]),
        )
    }

    fn read(records: Vec<Record>) -> RecordsBatch {
        RecordsBatch {
            records,
            millis_behind_latest: 7,
            shard_end: None,
        }
    }

    fn delivery(reads: Vec<(Duration, RecordsBatch)>, window: BatchingWindow) -> Delivery {
        Delivery::new(
            Box::new(Script(reads.into())),
            Deaggregator::new(),
            &ExtendedSequenceNumber::TrimHorizon,
            window,
        )
    }

    fn seqs(d: &Delivered) -> Vec<String> {
        d.records
            .iter()
            .map(|r| r.extended_sequence_number().to_string())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn per_read_delivers_each_read_as_it_comes() {
        let ms = Duration::from_millis;
        let mut d = delivery(
            vec![
                (ms(10), read(vec![record(1, 1), record(2, 1)])),
                (ms(10), read(vec![record(3, 1)])),
            ],
            BatchingWindow::PER_READ,
        );
        assert_eq!(d.next().await.unwrap().records.len(), 2);
        let call = d.next().await.unwrap();
        assert_eq!(call.records.len(), 1);
        assert_eq!(call.millis_behind_latest, 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_accumulates_across_reads_until_its_count_or_its_time() {
        let ms = Duration::from_millis;
        let window = BatchingWindow::new(3, usize::MAX, ms(500));
        let mut d = delivery(
            vec![
                (ms(100), read(vec![record(1, 1), record(2, 1)])),
                (ms(100), read(vec![record(3, 1), record(4, 1)])),
                (ms(100), read(vec![record(5, 1)])),
                (ms(10_000), read(vec![record(6, 1)])),
            ],
            window,
        );
        let start = Instant::now();
        let first = d.next().await.unwrap();
        assert_eq!(seqs(&first), ["1/0", "2/0", "3/0"]);
        assert_eq!(start.elapsed(), ms(200), "due as soon as 3 records wait");
        let second = d.next().await.unwrap();
        assert_eq!(seqs(&second), ["4/0", "5/0"]);
        // The rest of a window keeps its due time (600 ms, from record 1): no record waits
        // longer than `max_wait`, some less.
        assert_eq!(start.elapsed(), ms(600));
    }

    #[tokio::test(start_paused = true)]
    async fn a_byte_limit_splits_calls_and_a_large_record_goes_alone() {
        let window = BatchingWindow::new(100, 10, Duration::from_secs(1));
        let mut d = delivery(
            vec![(
                Duration::ZERO,
                read(vec![
                    record(1, 4),
                    record(2, 4),
                    record(3, 25),
                    record(4, 4),
                ]),
            )],
            window,
        );
        assert_eq!(seqs(&d.next().await.unwrap()), ["1/0", "2/0"]);
        assert_eq!(seqs(&d.next().await.unwrap()), ["3/0"]);
        // 4 bytes left: under every limit, so due after the wait.
        let start = Instant::now();
        assert_eq!(seqs(&d.next().await.unwrap()), ["4/0"]);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn shard_end_flushes_at_once_and_comes_with_the_last_call_only() {
        let window = BatchingWindow::new(2, usize::MAX, Duration::from_secs(60));
        let mut end = read(vec![record(3, 1)]);
        end.shard_end = Some(Vec::new());
        let mut d = delivery(
            vec![
                (Duration::ZERO, read(vec![record(1, 1), record(2, 1)])),
                (Duration::ZERO, read(vec![])),
                (Duration::ZERO, end),
            ],
            window,
        );
        let start = Instant::now();
        let a = d.next().await.unwrap();
        assert_eq!(
            (seqs(&a), a.shard_end.is_some()),
            (vec!["1/0".to_string(), "2/0".into()], false)
        );
        let b = d.next().await.unwrap();
        assert_eq!(
            (seqs(&b), b.shard_end.is_some()),
            (vec!["3/0".to_string()], true)
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(d.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_checkpoint_inside_an_aggregate_resumes_at_the_next_sub_record() {
        let mut builder = Aggregator::new();
        for i in 0..4u8 {
            builder
                .add(&format!("k{i}"), None, Bytes::from(vec![i]))
                .expect("fits");
        }
        let packed = builder.flush().expect("aggregate");
        let aggregate = Record::new(SequenceNumber::from_u128(9), "k0", packed.data);
        let checkpoint = ExtendedSequenceNumber::Sequence {
            sequence: SequenceNumber::from_u128(9),
            sub_sequence: 1,
        };
        let mut d = Delivery::new(
            Box::new(Script(
                vec![(Duration::ZERO, read(vec![aggregate, record(10, 1)]))].into(),
            )),
            Deaggregator::new(),
            &checkpoint,
            BatchingWindow::PER_READ,
        );
        assert_eq!(seqs(&d.next().await.unwrap()), ["9/2", "9/3", "10/0"]);
        assert_eq!(d.take_report().aggregates, 1);
    }

    /// Hands out reads and errors at once, then waits for ever.
    struct Outcomes(VecDeque<Result<RecordsBatch, RetrievalError>>);

    #[async_trait]
    impl RecordsPublisher for Outcomes {
        async fn next_batch(&mut self) -> Result<RecordsBatch, RetrievalError> {
            match self.0.pop_front() {
                Some(outcome) => outcome,
                None => std::future::pending().await,
            }
        }
    }

    fn at(seq: u128) -> ExtendedSequenceNumber {
        ExtendedSequenceNumber::Sequence {
            sequence: SequenceNumber::from_u128(seq),
            sub_sequence: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_read_past_the_checkpoint_is_a_gap_held_until_passed() {
        let reads = Outcomes(vec![Ok(read(vec![record(7, 1), record(8, 1)]))].into());
        let mut d = Delivery::new(
            Box::new(reads),
            Deaggregator::new(),
            &at(3),
            BatchingWindow::PER_READ,
        );
        let Err(RetrievalError::Trimmed(gap)) = d.next().await else {
            panic!("the checkpoint's record 3 did not come first: a gap");
        };
        assert_eq!(gap.after, Some(SequenceNumber::from_u128(3)));
        assert_eq!(gap.first_readable, Some(SequenceNumber::from_u128(7)));
        d.pass_gap(|| unreachable!("the held read goes on"));
        assert_eq!(seqs(&d.next().await.unwrap()), ["7/0", "8/0"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_shard_that_ends_without_the_checkpoint_s_record_is_a_gap() {
        let reads = Outcomes(vec![Ok(RecordsBatch::shard_end(Vec::new()))].into());
        let mut d = Delivery::new(
            Box::new(reads),
            Deaggregator::new(),
            &at(3),
            BatchingWindow::PER_READ,
        );
        let Err(RetrievalError::Trimmed(gap)) = d.next().await else {
            panic!("everything after the checkpoint was trimmed: a gap");
        };
        assert_eq!(gap.after, Some(SequenceNumber::from_u128(3)));
        assert_eq!(gap.first_readable, None);
        d.pass_gap(|| unreachable!("the held read goes on"));
        assert!(d.next().await.unwrap().shard_end.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_read_at_the_checkpoint_is_no_gap() {
        let reads = Outcomes(
            vec![
                Ok(read(Vec::new())),
                Ok(read(vec![record(3, 1), record(4, 1)])),
                Ok(read(vec![record(9, 1)])),
            ]
            .into(),
        );
        let mut d = Delivery::new(
            Box::new(reads),
            Deaggregator::new(),
            &at(3),
            BatchingWindow::PER_READ,
        );
        // The empty read is not delivered; the first with records starts at the checkpoint.
        assert_eq!(seqs(&d.next().await.unwrap()), ["4/0"]);
        // Only the first read is checked: later gaps between records are normal.
        assert_eq!(seqs(&d.next().await.unwrap()), ["9/0"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reported_gap_comes_after_the_buffered_records_and_a_restart_repeats_nothing() {
        let window = BatchingWindow::new(100, usize::MAX, Duration::from_secs(10));
        let gap = TrimmedGap::reported(Some(SequenceNumber::from_u128(2)), "trimmed");
        let reads = Outcomes(
            vec![
                Ok(read(vec![record(1, 1), record(2, 1)])),
                Err(RetrievalError::Trimmed(gap.clone())),
            ]
            .into(),
        );
        let mut d = Delivery::new(
            Box::new(reads),
            Deaggregator::new(),
            &ExtendedSequenceNumber::TrimHorizon,
            window,
        );
        assert_eq!(
            seqs(&d.next().await.unwrap()),
            ["1/0", "2/0"],
            "what was read before the gap is delivered first, without waiting for the window"
        );
        assert!(matches!(d.next().await, Err(RetrievalError::Trimmed(g)) if g == gap));
        // The restarted source repeats record 2 (not yet past it) and goes on.
        let restarted = Outcomes(vec![Ok(read(vec![record(2, 1), record(5, 1)]))].into());
        d.pass_gap(|| Box::new(restarted));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(seqs(&d.next().await.unwrap()), ["5/0"]);
    }

    mod bounded {
        use super::*;

        fn arrived(seq: u128, arrival_secs: u64) -> Record {
            let mut r = Record::new(SequenceNumber::from_u128(seq), "k", bytes::Bytes::new());
            r.approximate_arrival_timestamp =
                SystemTime::UNIX_EPOCH + Duration::from_secs(arrival_secs);
            r
        }

        fn at(secs: u64) -> SystemTime {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
        }

        #[test]
        fn records_at_or_after_the_bound_are_cut() {
            let mut batch = Delivered {
                records: vec![
                    arrived(1, 10),
                    arrived(2, 19),
                    arrived(3, 20),
                    arrived(4, 21),
                ],
                millis_behind_latest: 5_000,
                shard_end: Some(Vec::new()),
            };
            assert!(batch.cut(at(20), at(100)));
            assert_eq!(batch.records.len(), 2);
            assert!(batch.shard_end.is_none());
        }

        #[test]
        fn the_tip_counts_only_a_margin_after_the_bound() {
            let batch = || Delivered {
                records: vec![arrived(1, 10)],
                millis_behind_latest: 0,
                shard_end: None,
            };
            assert!(!batch().cut(at(20), at(20)));
            assert!(batch().cut(at(20), at(21)));
            let mut behind = Delivered {
                millis_behind_latest: 1,
                ..batch()
            };
            assert!(!behind.cut(at(20), at(30)));
            let mut ended = Delivered {
                shard_end: Some(Vec::new()),
                ..batch()
            };
            assert!(!ended.cut(at(20), at(30)), "a shard end is delivered");
        }
    }
}
