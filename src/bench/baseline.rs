//! The original design, reproduced as the benchmark's baseline.
//!
//! A `HashMap<String, String>` behind a reader/writer lock; the durable variant
//! first appends a JSON line to a log file and calls a full `fsync` for every
//! write, holding a mutex so writers go one at a time. This is what walrus is
//! measured against in every `bench store` run.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Mutex, RwLock};

use serde::Serialize;

#[derive(Default)]
pub struct OriginalMemory {
    map: RwLock<HashMap<String, String>>,
}

impl OriginalMemory {
    pub fn set(&self, key: &str, value: &str) {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        map.insert(key.to_string(), value.to_string());
    }

    pub fn get(&self, key: &str) -> Option<String> {
        let map = self.map.read().unwrap_or_else(|poison| poison.into_inner());
        map.get(key).cloned()
    }

    pub fn delete(&self, key: &str) {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        map.remove(key);
    }
}

pub struct OriginalDurable {
    memory: OriginalMemory,
    log: Mutex<File>,
}

#[derive(Serialize)]
struct LogLine<'a> {
    op: &'a str,
    key: &'a str,
    value: &'a str,
}

impl OriginalDurable {
    pub fn open(path: &Path) -> io::Result<OriginalDurable> {
        let log = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(OriginalDurable {
            memory: OriginalMemory::default(),
            log: Mutex::new(log),
        })
    }

    pub fn set(&self, key: &str, value: &str) -> io::Result<()> {
        self.log_line("set", key, value)?;
        self.memory.set(key, value);
        Ok(())
    }

    pub fn delete(&self, key: &str) -> io::Result<()> {
        self.log_line("delete", key, "")?;
        self.memory.delete(key);
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.memory.get(key)
    }

    /// Appends one JSON line and fsyncs it, one writer at a time.
    fn log_line(&self, op: &str, key: &str, value: &str) -> io::Result<()> {
        let mut line = serde_json::to_vec(&LogLine { op, key, value }).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut log = self.log.lock().unwrap_or_else(|poison| poison.into_inner());
        log.write_all(&line)?;
        log.sync_all()
    }
}
