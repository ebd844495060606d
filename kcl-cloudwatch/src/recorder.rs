//! The `metrics::Recorder` side: every metric handle is a cell that accumulates a statistic set
//! (sample count, sum, minimum, maximum) until the next flush drains it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use parking_lot::Mutex;

use crate::{Datum, MetricsLevel, StatisticSet};

/// The dimensions the KCL publishes (other labels are dropped).
pub const KCL_DIMENSIONS: &[&str] = &[
    "Operation",
    "ShardId",
    "WorkerIdentifier",
    "StreamId",
    "Outcome",
];

#[derive(Debug, Default)]
struct Accumulator {
    stats: Option<StatisticSet>,
    /// Gauges: the current value, republished each interval even when unchanged.
    gauge: Option<f64>,
}

impl Accumulator {
    fn sample(&mut self, v: f64) {
        match &mut self.stats {
            Some(s) => {
                s.count += 1.0;
                s.sum += v;
                s.min = s.min.min(v);
                s.max = s.max.max(v);
            }
            None => {
                self.stats = Some(StatisticSet {
                    count: 1.0,
                    sum: v,
                    min: v,
                    max: v,
                })
            }
        }
    }
}

#[derive(Debug, Default)]
struct Cell(Mutex<Accumulator>);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.lock().sample(value as f64);
    }

    fn absolute(&self, value: u64) {
        self.0.lock().sample(value as f64);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        let mut a = self.0.lock();
        let v = a.gauge.unwrap_or(0.0) + value;
        a.gauge = Some(v);
        a.sample(v);
    }

    fn decrement(&self, value: f64) {
        GaugeFn::increment(self, -value);
    }

    fn set(&self, value: f64) {
        let mut a = self.0.lock();
        a.gauge = Some(value);
        a.sample(value);
    }
}

impl HistogramFn for Cell {
    fn record(&self, value: f64) {
        self.0.lock().sample(value);
    }
}

/// One published metric: its name, dimensions and accumulator.
#[derive(Debug)]
struct Entry {
    name: String,
    dimensions: Vec<(String, String)>,
    cell: Arc<Cell>,
}

/// A metric name and its (filtered, sorted) dimensions.
type EntryKey = (String, Vec<(String, String)>);

#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// Keyed by (name, dimensions) after filtering, so handles that differ only in dropped
    /// labels share one statistic set (at SUMMARY, every shard's RecordsProcessed sums up).
    entries: Mutex<HashMap<EntryKey, Entry>>,
    units: Mutex<HashMap<String, Unit>>,
}

impl Registry {
    /// Drains every accumulator into datums stamped `at`.
    pub(crate) fn drain(&self, at: SystemTime) -> Vec<Datum> {
        let units = self.units.lock().clone();
        let entries = self.entries.lock();
        let mut out = Vec::new();
        for e in entries.values() {
            let mut a = e.cell.0.lock();
            let stats = match (a.stats.take(), a.gauge) {
                (Some(s), _) => s,
                (None, Some(g)) => StatisticSet {
                    count: 1.0,
                    sum: g,
                    min: g,
                    max: g,
                },
                (None, None) => continue,
            };
            out.push(Datum {
                name: e.name.clone(),
                dimensions: e.dimensions.clone(),
                unit: units.get(&e.name).copied(),
                stats,
                timestamp: at,
            });
        }
        out.sort_by(|a, b| (&a.name, &a.dimensions).cmp(&(&b.name, &b.dimensions)));
        out
    }
}

/// A `metrics::Recorder` that aggregates into CloudWatch statistic sets; a
/// [`crate::CloudWatchPublisher`] drains it. Install it with `metrics::set_global_recorder`, or
/// beside Prometheus with `metrics_util::layers::FanoutBuilder`.
#[derive(Debug, Clone)]
pub struct CloudWatchRecorder {
    pub(crate) registry: Arc<Registry>,
    level: MetricsLevel,
    dimensions: Arc<[String]>,
}

impl CloudWatchRecorder {
    /// A recorder publishing at `level` with the KCL's dimensions.
    pub fn new(level: MetricsLevel) -> Self {
        Self::with_dimensions(level, KCL_DIMENSIONS.iter().map(|d| d.to_string()))
    }

    /// A recorder publishing at `level` with these label keys as dimensions (at most 30).
    pub fn with_dimensions(
        level: MetricsLevel,
        dimensions: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            registry: Arc::default(),
            level,
            dimensions: dimensions.into_iter().take(30).collect(),
        }
    }

    fn cell(&self, key: &Key, metadata: &Metadata<'_>) -> Option<Arc<Cell>> {
        // NONE publishes nothing; SUMMARY publishes INFO and above without the ShardId
        // dimension (aggregated over shards); DETAILED publishes everything.
        let keep_shard = match self.level {
            MetricsLevel::None => return None,
            MetricsLevel::Summary if *metadata.level() < metrics::Level::INFO => return None,
            MetricsLevel::Summary => false,
            MetricsLevel::Detailed => true,
        };
        let mut dimensions: Vec<(String, String)> = key
            .labels()
            .filter(|l| self.dimensions.iter().any(|d| d == l.key()))
            .filter(|l| keep_shard || l.key() != "ShardId")
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        dimensions.sort();
        let name = key.name().to_string();
        let mut entries = self.registry.entries.lock();
        let entry = entries
            .entry((name.clone(), dimensions.clone()))
            .or_insert_with(|| Entry {
                name,
                dimensions,
                cell: Arc::default(),
            });
        Some(entry.cell.clone())
    }

    fn describe(&self, key: KeyName, unit: Option<Unit>) {
        if let Some(unit) = unit {
            self.registry
                .units
                .lock()
                .insert(key.as_str().to_string(), unit);
        }
    }
}

impl Recorder for CloudWatchRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.cell(key, metadata)
            .map_or_else(Counter::noop, Counter::from_arc)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.cell(key, metadata)
            .map_or_else(Gauge::noop, Gauge::from_arc)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.cell(key, metadata)
            .map_or_else(Histogram::noop, Histogram::from_arc)
    }
}
