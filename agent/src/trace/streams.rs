//! The per-connection HTTP streams the tracer is recovering requests from.
//!
//! One LRU list holds both the streams and their age, so forgetting a stream (its fd was
//! reused by a new connection) also forgets its place in the eviction order: memory is
//! bounded by the capacity however many connections come and go.

use hashlink::{LinkedHashMap, linked_hash_map::Entry};

use super::http::HttpStream;

/// Which writes belong together: one socket of one process, and for TLS one library
/// connection object on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub tgid: u32,
    pub fd: i32,
    /// TLS connection object; 0 for plain sockets.
    pub conn: u64,
}

pub struct StreamTable {
    streams: LinkedHashMap<StreamKey, HttpStream>,
    capacity: usize,
}

impl StreamTable {
    pub fn new(capacity: usize) -> Self {
        Self { streams: LinkedHashMap::new(), capacity: capacity.max(1) }
    }

    pub fn contains(&self, key: &StreamKey) -> bool {
        self.streams.contains_key(key)
    }

    /// The stream of `key`, created if new; the least recently used one is forgotten when
    /// the table is full.
    pub fn get_or_insert(&mut self, key: StreamKey) -> &mut HttpStream {
        if !self.streams.contains_key(&key) {
            while self.streams.len() >= self.capacity {
                self.streams.pop_front();
            }
        }
        match self.streams.entry(key) {
            Entry::Occupied(mut used) => {
                used.to_back();
                used.into_mut()
            }
            Entry::Vacant(new) => new.insert(HttpStream::new()),
        }
    }

    /// Forgets every stream on (tgid, fd): the fd now names another connection.
    pub fn forget_fd(&mut self, tgid: u32, fd: i32) {
        self.streams.retain(|k, _| !(k.tgid == tgid && k.fd == fd));
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tgid: u32, fd: i32) -> StreamKey {
        StreamKey { tgid, fd, conn: 0 }
    }

    /// A process that opens and closes connections forever (the same fds, reconnected)
    /// must not grow the tracer's memory: at the branch point the eviction order kept one
    /// entry per connection ever seen.
    #[test]
    fn connection_churn_keeps_the_table_bounded() {
        let mut t = StreamTable::new(64);
        for i in 0..200_000u32 {
            let (tgid, fd) = (1000 + i % 7, (i % 5) as i32);
            t.forget_fd(tgid, fd);
            t.get_or_insert(key(tgid, fd));
            assert!(t.len() <= 64);
        }
        // LinkedHashMap keeps its order inside the map: nothing else can grow.
        assert!(t.streams.capacity() < 1024, "capacity {}", t.streams.capacity());
    }

    #[test]
    fn least_recently_used_is_evicted_first() {
        let mut t = StreamTable::new(2);
        t.get_or_insert(key(1, 3));
        t.get_or_insert(key(2, 3));
        t.get_or_insert(key(1, 3)); // used again: now the newest
        t.get_or_insert(key(3, 3));
        assert!(t.contains(&key(1, 3)) && t.contains(&key(3, 3)));
        assert!(!t.contains(&key(2, 3)));
        t.forget_fd(1, 3);
        assert!(!t.contains(&key(1, 3)));
        assert_eq!(t.len(), 1);
    }
}
