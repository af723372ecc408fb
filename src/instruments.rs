//! Prometheus instruments, made by the room that counts with them: under the relay's prefix and
//! unregistered. The observe room registers every room's instruments in its registry and renders
//! them beside the gauges it reads from state, so rooms never reach for a registry and metrics
//! imports rooms, never the reverse. Labels are typed: a value a `Label` does not list cannot
//! compile, and every value exists at zero from the start, so rates and alerts see the series.

use std::marker::PhantomData;

use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts};

pub const PREFIX: &str = "replica_relay";

/// What a room hands the observe room to register.
pub trait Collectors {
    fn collectors(&self) -> Vec<Box<dyn Collector>>;
}

pub fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(Opts::new(name, help).namespace(PREFIX)).expect("a valid metric")
}

pub fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let opts = HistogramOpts::new(name, help)
        .namespace(PREFIX)
        .buckets(buckets);
    Histogram::with_opts(opts).expect("a valid metric")
}

/// The values one label takes.
pub trait Label: Copy + 'static {
    /// The label's name, e.g. `reason`.
    const NAME: &'static str;
    const ALL: &'static [Self];
    fn value(self) -> &'static str;
}

/// A counter per value of the label `L`.
#[derive(Clone)]
pub struct Labelled<L: Label> {
    vec: IntCounterVec,
    _label: PhantomData<L>,
}

impl<L: Label> Labelled<L> {
    pub fn new(name: &str, help: &str) -> Labelled<L> {
        let opts = Opts::new(name, help).namespace(PREFIX);
        let vec = IntCounterVec::new(opts, &[L::NAME]).expect("a valid metric");
        for l in L::ALL {
            vec.with_label_values(&[l.value()]);
        }
        Labelled {
            vec,
            _label: PhantomData,
        }
    }

    pub fn get(&self, l: L) -> IntCounter {
        self.vec.with_label_values(&[l.value()])
    }

    pub fn inc(&self, l: L) {
        self.get(l).inc();
    }

    /// The sum over every value.
    pub fn total(&self) -> u64 {
        L::ALL.iter().map(|&l| self.get(l).get()).sum()
    }

    pub fn collector(&self) -> Box<dyn Collector> {
        Box::new(self.vec.clone())
    }
}

/// What part of a replication conversation bytes belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Snapshot,
    Stream,
}

impl Label for Phase {
    const NAME: &'static str = "phase";
    const ALL: &'static [Phase] = &[Phase::Snapshot, Phase::Stream];
    fn value(self) -> &'static str {
        match self {
            Phase::Snapshot => "snapshot",
            Phase::Stream => "stream",
        }
    }
}
