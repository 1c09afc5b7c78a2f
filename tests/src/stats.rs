//! The stats line each core prints every `--stats-interval`, parsed.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use crate::log::LogLine;

/// Figures of one pool size class from a stats line
/// (`poolBYTES=IN_USE/ALLOCATED/CAPACITY/HIGH_WATER/EXHAUSTED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolFigures {
    /// Bytes per buffer of the class.
    pub buffer_bytes: u32,
    /// Buffers in use.
    pub in_use: u64,
    /// Buffers allocated.
    pub allocated: u64,
    /// The class's capacity.
    pub capacity: u64,
    /// Most buffers in use at once.
    pub high_water: u64,
    /// Requests the class could not serve.
    pub exhausted: u64,
}

/// One core's stats line, parsed.
#[derive(Debug, Clone)]
pub struct CoreStats {
    /// Core index.
    pub core: usize,
    counters: BTreeMap<String, u64>,
    /// Pool classes, smallest first.
    pub pools: Vec<PoolFigures>,
    /// When the line was read.
    pub at: Instant,
}

impl CoreStats {
    /// Parses the `core=N ...` part of a `shoal::stats` line; `None` when the
    /// line is not one.
    pub fn parse(line: &LogLine) -> Option<Self> {
        let (_, fields) = line.text.split_once(" shoal::stats: ")?;
        let mut counters = BTreeMap::new();
        let mut pools = Vec::new();
        for field in fields.split_whitespace() {
            let (key, value) = field.split_once('=')?;
            if let Some(bytes) = key.strip_prefix("pool") {
                let parts: Vec<u64> = value
                    .split('/')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .ok()?;
                let [in_use, allocated, capacity, high_water, exhausted] = parts[..] else {
                    return None;
                };
                pools.push(PoolFigures {
                    buffer_bytes: bytes.parse().ok()?,
                    in_use,
                    allocated,
                    capacity,
                    high_water,
                    exhausted,
                });
            } else {
                counters.insert(key.to_owned(), value.parse().ok()?);
            }
        }
        let core = usize::try_from(*counters.get("core")?).ok()?;
        Some(Self {
            core,
            counters,
            pools,
            at: line.at,
        })
    }

    /// A counter or gauge by its name in the line (`conns`, `mesh_sent`, ...).
    pub fn get(&self, name: &str) -> u64 {
        *self
            .counters
            .get(name)
            .unwrap_or_else(|| panic!("stats line of core {} has no field {name:?}", self.core))
    }

    /// The pool class of `buffer_bytes`.
    pub fn pool(&self, buffer_bytes: u32) -> PoolFigures {
        *self
            .pools
            .iter()
            .find(|p| p.buffer_bytes == buffer_bytes)
            .unwrap_or_else(|| {
                panic!(
                    "core {} has no pool class of {buffer_bytes} bytes",
                    self.core
                )
            })
    }
}

/// The latest stats line of every core.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Indexed by core.
    pub cores: Vec<CoreStats>,
}

impl Stats {
    /// A counter summed over the cores.
    pub fn sum(&self, name: &str) -> u64 {
        self.cores.iter().map(|c| c.get(name)).sum()
    }

    /// One core's figures.
    pub fn core(&self, index: usize) -> &CoreStats {
        &self.cores[index]
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.cores {
            write!(f, "core {}:", c.core)?;
            for (k, v) in &c.counters {
                write!(f, " {k}={v}")?;
            }
            for p in &c.pools {
                write!(
                    f,
                    " pool{}={}/{}/{}/{}/{}",
                    p.buffer_bytes, p.in_use, p.allocated, p.capacity, p.high_water, p.exhausted
                )?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
