//! Triton's response cache: the outputs of a request, kept in memory and
//! answered again, without queueing, to an identical request.
//!
//! # Rules
//! - Off unless `--cache-size-bytes` is above 0, and then only for models
//!   whose configuration enables it (`response_cache`).
//! - The key is the full bytes of what decides the answer: the version's
//!   process-unique id (`LoadedVersion::uid`), the inputs in signature order
//!   (name, datatype, shape, data), the requested outputs and their
//!   classification counts. The map compares whole keys, so two requests
//!   never share an entry by a hash collision.
//! - A new `LoadedVersion` (a new version, or a reload of the same number)
//!   has a new id, so no request can reach its predecessor's entries; they
//!   age out under the LRU order.
//! - Entries are evicted least recently used first while the bytes held
//!   (key plus outputs) exceed the bound; an entry larger than the whole
//!   bound is never stored.

use super::classify::Classes;
use crate::metrics::CacheMetrics;
use crate::registry::LoadedVersion;
use crate::scheduler::Job;
use crate::tensor::{RunOutput, TensorData};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one entry is charged for beyond its key and tensor bytes.
const ENTRY_OVERHEAD: usize = 64;

/// The server's response cache, shared by every model that enables it.
#[derive(Debug)]
pub(crate) struct ResponseCache {
    capacity: usize,
    state: Mutex<State>,
    metrics: CacheMetrics,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<Arc<[u8]>, Entry>,
    /// Use order: the smallest tick is the least recently used.
    order: BTreeMap<u64, Arc<[u8]>>,
    tick: u64,
    bytes: usize,
}

#[derive(Debug)]
struct Entry {
    outputs: Vec<(String, RunOutput)>,
    size: usize,
    tick: u64,
}

impl ResponseCache {
    /// A cache of at most `capacity` bytes; `None` when it is 0 (off).
    pub(crate) fn new(capacity: usize, metrics: CacheMetrics) -> Option<Self> {
        (capacity > 0).then(|| Self {
            capacity,
            state: Mutex::new(State::default()),
            metrics,
        })
    }

    /// Looks `job` (on `version`, with `classes`) up.
    pub(crate) fn lookup(
        &self,
        version: &LoadedVersion,
        job: &Job,
        classes: &Classes,
    ) -> Lookup<'_> {
        let started = Instant::now();
        let key = key(version.uid, job, classes);
        match self.get(&key) {
            Some(outputs) => Lookup::Hit(outputs, started.elapsed()),
            None => Lookup::Miss(Miss {
                cache: self,
                key,
                uid: version.uid,
                took: started.elapsed(),
            }),
        }
    }

    /// The outputs stored under `key`, now the most recently used.
    fn get(&self, key: &[u8]) -> Option<Vec<(String, RunOutput)>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State {
            entries,
            order,
            tick,
            ..
        } = &mut *state;
        let stored_key = entries.get_key_value(key)?.0.clone();
        let entry = entries.get_mut(key)?;
        *tick += 1;
        order.remove(&entry.tick);
        entry.tick = *tick;
        order.insert(*tick, stored_key);
        Some(entry.outputs.clone())
    }

    /// Stores `outputs` under `key`, evicting the least recently used
    /// entries to stay within the bound.
    fn insert(&self, key: Vec<u8>, outputs: &[(String, RunOutput)]) {
        let size = key.len() + ENTRY_OVERHEAD + outputs.iter().map(output_size).sum::<usize>();
        if size > self.capacity {
            return;
        }
        let key: Arc<[u8]> = key.into();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = state.entries.remove(&key) {
            state.order.remove(&old.tick);
            state.bytes -= old.size;
        }
        while state.bytes + size > self.capacity {
            let Some((_, oldest)) = state.order.pop_first() else {
                break;
            };
            if let Some(gone) = state.entries.remove(&oldest) {
                state.bytes -= gone.size;
                self.metrics.evictions.inc();
            }
        }
        state.tick += 1;
        let tick = state.tick;
        state.order.insert(tick, key.clone());
        state.entries.insert(
            key,
            Entry {
                outputs: outputs.to_vec(),
                size,
                tick,
            },
        );
        state.bytes += size;
        self.metrics.size_bytes.set(gauge(state.bytes));
        self.metrics.entries.set(gauge(state.entries.len()));
    }
}

/// The answer of [`ResponseCache::lookup`].
pub(crate) enum Lookup<'a> {
    /// The stored outputs, and how long the lookup took.
    Hit(Vec<(String, RunOutput)>, Duration),
    Miss(Miss<'a>),
}

/// A lookup that missed: what storing the request's answer needs.
pub(crate) struct Miss<'a> {
    cache: &'a ResponseCache,
    key: Vec<u8>,
    /// The version the key was made for.
    uid: u64,
    took: Duration,
}

impl Miss<'_> {
    /// Stores the outputs `version` answered and records the miss. A request
    /// moved to a successor version after its lookup is not stored: its key
    /// names the predecessor.
    pub(crate) fn store(self, version: &LoadedVersion, outputs: &[(String, RunOutput)]) {
        let started = Instant::now();
        if self.uid == version.uid {
            self.cache.insert(self.key, outputs);
        }
        version
            .metrics
            .record_cache_miss(self.took + started.elapsed());
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn output_size((name, out): &(String, RunOutput)) -> usize {
    let data = match &out.data {
        TensorData::Fixed(b) => b.len(),
        // Each element also costs its handle.
        TensorData::Bytes(v) => v.iter().map(|b| b.len() + 32).sum(),
    };
    name.len() + out.shape.len() * 8 + data
}

/// The cache key of `job` on the version with id `uid` (see the module doc).
fn key(uid: u64, job: &Job, classes: &Classes) -> Vec<u8> {
    let mut k =
        Vec::with_capacity(64 + job.inputs.iter().map(|t| t.data.byte_len()).sum::<usize>());
    let mut put = |bytes: &[u8]| {
        k.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        k.extend_from_slice(bytes);
    };
    put(&uid.to_le_bytes());
    for t in &job.inputs {
        put(t.name.as_bytes());
        put(t.datatype.as_str().as_bytes());
        let dims: Vec<u8> = t
            .shape
            .iter()
            .flat_map(|d| (*d as u64).to_le_bytes())
            .collect();
        put(&dims);
        match &t.data {
            TensorData::Fixed(b) => put(b),
            TensorData::Bytes(elements) => {
                put(&(elements.len() as u64).to_le_bytes());
                for e in elements {
                    put(e);
                }
            }
        }
    }
    let outputs: Vec<u8> = job
        .outputs
        .iter()
        .flat_map(|i| (*i as u64).to_le_bytes())
        .collect();
    put(&outputs);
    for (name, count) in classes {
        put(name.as_bytes());
        put(&count.to_le_bytes());
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DataType;
    use bytes::Bytes;

    fn out(n: usize) -> Vec<(String, RunOutput)> {
        vec![(
            "y".into(),
            RunOutput {
                datatype: DataType::Uint8,
                shape: vec![n],
                data: TensorData::Fixed(Bytes::from(vec![7u8; n])),
            },
        )]
    }

    #[test]
    fn evicts_least_recently_used_within_the_bound() {
        let metrics = CacheMetrics::new();
        let cache = ResponseCache::new(500, metrics.clone()).unwrap();
        cache.insert(vec![1], &out(100));
        cache.insert(vec![2], &out(100));
        assert!(cache.get(&[1]).is_some());
        cache.insert(vec![3], &out(100));
        // 3 entries of 100 + 1 + 64 + 9 bytes exceed 500: 2 was least recently used.
        assert!(cache.get(&[2]).is_none());
        assert!(cache.get(&[1]).is_some());
        assert!(cache.get(&[3]).is_some());
        assert_eq!(metrics.evictions.get(), 1);
        assert!(metrics.size_bytes.get() <= 500);
        assert_eq!(metrics.entries.get(), 2);
    }

    #[test]
    fn an_entry_larger_than_the_bound_is_not_stored() {
        let cache = ResponseCache::new(100, CacheMetrics::new()).unwrap();
        cache.insert(vec![1], &out(1000));
        assert!(cache.get(&[1]).is_none());
        assert!(ResponseCache::new(0, CacheMetrics::new()).is_none());
    }
}
