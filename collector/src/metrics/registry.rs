//! A small recorder for the `metrics` crate that keeps every series in atomics and
//! writes them in the Prometheus text exposition format (0.0.4).
//!
//! Lighter than an exporter crate (no sketches, no epoch GC, no HTTP listener of its
//! own, nothing new in the build) and with the two behaviours finwait needs: histograms
//! are real Prometheus histograms with fixed buckets (so `histogram_quantile` works
//! across collectors), and a family can be described before it has a series, so
//! `# HELP` is there from the first scrape. Registering a series takes a read lock on
//! a small map; the handle the macros return is then a plain atomic.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// Upper bounds (seconds) of every latency histogram: 1 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// What a family is, for `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in fixed buckets.
    Histogram,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A counter's value.
#[derive(Debug, Default)]
struct CounterCell(AtomicU64);

impl CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

/// An `f64` in an atomic (its bits).
#[derive(Debug, Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    fn update(&self, f: impl Fn(f64) -> f64) {
        // A CAS loop: contention is a handful of tasks at most.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some(f(f64::from_bits(bits)).to_bits())
            });
    }
}

impl GaugeFn for AtomicF64 {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

/// A histogram: one count per bucket (not cumulative; summed when written), the sum
/// and the count of observations.
#[derive(Debug)]
struct HistogramCell {
    bounds: &'static [f64],
    /// `bounds.len() + 1` counts, the last for observations above every bound.
    buckets: Box<[AtomicU64]>,
    sum: AtomicF64,
    count: AtomicU64,
}

impl HistogramCell {
    fn new(bounds: &'static [f64]) -> HistogramCell {
        HistogramCell {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicF64::default(),
            count: AtomicU64::new(0),
        }
    }
}

impl HistogramFn for HistogramCell {
    fn record(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        let i = self.bounds.partition_point(|b| *b < value);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.update(|s| s + value);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every series, by kind, and every family's description.
#[derive(Debug, Default)]
pub struct Registry {
    counters: RwLock<HashMap<Key, Arc<CounterCell>>>,
    gauges: RwLock<HashMap<Key, Arc<AtomicF64>>>,
    histograms: RwLock<HashMap<Key, Arc<HistogramCell>>>,
    /// Family name → kind and help text.
    described: RwLock<BTreeMap<String, (Kind, String)>>,
}

/// Takes `lock`'s guard even if a holder panicked: the maps hold only atomics, which a
/// panic cannot leave half-written.
macro_rules! rlock {
    ($lock:expr) => {
        $lock
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
}
macro_rules! wlock {
    ($lock:expr) => {
        $lock
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
}

fn cell<T>(map: &RwLock<HashMap<Key, Arc<T>>>, key: &Key, new: impl FnOnce() -> T) -> Arc<T> {
    if let Some(c) = rlock!(map).get(key) {
        return Arc::clone(c);
    }
    Arc::clone(
        wlock!(map)
            .entry(key.clone())
            .or_insert_with(|| Arc::new(new())),
    )
}

impl Registry {
    fn describe(&self, name: KeyName, kind: Kind, help: SharedString) {
        wlock!(self.described).insert(name.as_str().to_owned(), (kind, help.into_owned()));
    }

    /// Writes every family in the text format, families sorted by name and series by
    /// labels; a described family without series gets its `# HELP` and `# TYPE` only.
    pub fn render(&self, out: &mut String) {
        let mut families: BTreeMap<&str, Vec<(String, Sample)>> = BTreeMap::new();
        let counters = rlock!(self.counters);
        let gauges = rlock!(self.gauges);
        let histograms = rlock!(self.histograms);
        let described = rlock!(self.described);
        for (k, c) in counters.iter() {
            families.entry(k.name()).or_default().push((
                labels(k, None),
                Sample::Counter(c.0.load(Ordering::Relaxed)),
            ));
        }
        for (k, g) in gauges.iter() {
            families
                .entry(k.name())
                .or_default()
                .push((labels(k, None), Sample::Gauge(g.get())));
        }
        for (k, h) in histograms.iter() {
            families
                .entry(k.name())
                .or_default()
                .push((labels(k, None), Sample::Histogram(k, h)));
        }
        for name in described.keys() {
            families.entry(name.as_str()).or_default();
        }
        for (name, mut series) in families {
            let kind = match (described.get(name), series.first()) {
                (Some((kind, _)), _) => *kind,
                (None, Some((_, Sample::Counter(_)))) => Kind::Counter,
                (None, Some((_, Sample::Histogram(..)))) => Kind::Histogram,
                (None, _) => Kind::Gauge,
            };
            if let Some((_, help)) = described.get(name) {
                header(out, name, kind, help);
            } else {
                let _ = writeln!(out, "# TYPE {name} {}", kind.word());
            }
            series.sort_by(|a, b| a.0.cmp(&b.0));
            for (labels, sample) in series {
                match sample {
                    Sample::Counter(v) => {
                        let _ = writeln!(out, "{name}{labels} {v}");
                    }
                    Sample::Gauge(v) => {
                        let _ = writeln!(out, "{name}{labels} {}", number(v));
                    }
                    Sample::Histogram(k, h) => {
                        let mut cumulative = 0u64;
                        for (i, bound) in h.bounds.iter().enumerate() {
                            cumulative += h.buckets[i].load(Ordering::Relaxed);
                            let le = self::labels(k, Some(&number(*bound)));
                            let _ = writeln!(out, "{name}_bucket{le} {cumulative}");
                        }
                        // +Inf equals _count; read it from the buckets so the two agree
                        // even while observations arrive.
                        cumulative += h.buckets[h.bounds.len()].load(Ordering::Relaxed);
                        let le = self::labels(k, Some("+Inf"));
                        let _ = writeln!(out, "{name}_bucket{le} {cumulative}");
                        let _ = writeln!(out, "{name}_sum{labels} {}", number(h.sum.get()));
                        let _ = writeln!(out, "{name}_count{labels} {cumulative}");
                    }
                }
            }
        }
    }
}

/// One series' value while rendering.
enum Sample<'a> {
    Counter(u64),
    Gauge(f64),
    Histogram(&'a Key, &'a HistogramCell),
}

/// `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: Kind, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {}", kind.word());
}

/// A number as the text format spells it.
pub fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// `{a="x",b="y"}` (empty when there are none), sorted by name, with `le` last.
fn labels(key: &Key, le: Option<&str>) -> String {
    let mut pairs: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
    pairs.sort_unstable();
    label_set(&pairs, le)
}

/// `{a="x",b="y"}` from pairs, values escaped; `le` appended when given.
pub fn label_set(pairs: &[(&str, &str)], le: Option<&str>) -> String {
    if pairs.is_empty() && le.is_none() {
        return String::new();
    }
    let mut s = String::from("{");
    let le = le.map(|v| ("le", v));
    for (i, (k, v)) in pairs.iter().copied().chain(le).enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

/// The recorder installed globally: a handle on the shared [`Registry`].
#[derive(Debug, Clone)]
pub struct Handle(pub Arc<Registry>);

impl Recorder for Handle {
    fn describe_counter(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.0.describe(key, Kind::Counter, description);
    }
    fn describe_gauge(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.0.describe(key, Kind::Gauge, description);
    }
    fn describe_histogram(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.0.describe(key, Kind::Histogram, description);
    }
    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        Counter::from_arc(cell(&self.0.counters, key, CounterCell::default))
    }
    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(cell(&self.0.gauges, key, AtomicF64::default))
    }
    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(cell(&self.0.histograms, key, || {
            HistogramCell::new(LATENCY_BUCKETS)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::{Label, Level};

    fn meta() -> Metadata<'static> {
        Metadata::new("t", Level::INFO, None)
    }

    #[test]
    fn series_render_with_help_sorted_labels_and_cumulative_buckets() {
        let h = Handle(Arc::default());
        h.describe_counter("x_total".into(), None, "Things.\nMore".into());
        h.describe_gauge("empty".into(), None, "Nothing yet".into());
        let k = Key::from_parts(
            "x_total",
            vec![Label::new("z", "1"), Label::new("a", "q\"\\")],
        );
        h.register_counter(&k, &meta()).increment(3);
        h.register_counter(&k, &meta()).increment(2);
        h.register_gauge(&Key::from_name("g"), &meta()).set(1.5);
        h.register_gauge(&Key::from_name("g"), &meta())
            .decrement(2.0);
        let hist = h.register_histogram(&Key::from_name("lat_seconds"), &meta());
        hist.record(0.0005);
        hist.record(0.003);
        hist.record(100.0);
        let mut out = String::new();
        h.0.render(&mut out);
        assert!(out.contains("# HELP x_total Things.\\nMore\n# TYPE x_total counter\n"));
        assert!(
            out.contains("x_total{a=\"q\\\"\\\\\",z=\"1\"} 5\n"),
            "{out}"
        );
        assert!(out.contains("# TYPE g gauge\ng -0.5\n"), "{out}");
        assert!(out.contains("# HELP empty Nothing yet\n# TYPE empty gauge\n"));
        assert!(
            out.contains("lat_seconds_bucket{le=\"0.001\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("lat_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert!(out.contains("lat_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(out.contains("lat_seconds_bucket{le=\"30\"} 2\n"));
        assert!(out.contains("lat_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(out.contains("lat_seconds_count 3\n"));
        assert!(out.contains("lat_seconds_sum 100.0035\n"), "{out}");
    }

    #[test]
    fn absolute_never_lowers_a_counter() {
        let h = Handle(Arc::default());
        let c = h.register_counter(&Key::from_name("c_total"), &meta());
        c.absolute(7);
        c.absolute(3);
        let mut out = String::new();
        h.0.render(&mut out);
        assert!(out.contains("c_total 7\n"), "{out}");
    }
}
