//! The transmitter's named streams: each has its own source, pacer thread, Opus
//! encoder, rolling buffer and hub, and all share one timeline (sample index `n` has
//! PTS `epoch_us + n / 48 kHz` in every stream), the transmitter's clock and the
//! playout delay. So a receiver can move from one stream to another keeping its clock
//! sync and offset, and every stream is encoded once, whatever the number of
//! receivers. `--source` is the stream [`DEFAULT_STREAM`]; `--stream URI` adds others,
//! and the control API can add and remove some while running.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use syncstream_protocol::codec::AudioEncoder;
use syncstream_protocol::wire::Codec;
use syncstream_shared::names::check_device_name;
use syncstream_shared::time::{Clock, STREAM_CHANNELS, STREAM_SAMPLE_RATE};

use crate::pacer::{self, ChunkProducer, PullAudio};
use crate::rolling_buffer::RollingBuffer;
use crate::stream_server::{Directory, StreamHub, DEFAULT_STREAM};

/// Most streams at once.
pub const MAX_STREAMS: usize = 16;

/// A stream as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamInfo {
    /// Name (letters, digits, `-`, `_`).
    pub name: String,
    /// The URI or source spec it was opened from.
    pub uri: String,
    /// The source, in words (`file music.flac (44100 Hz, 2 ch)`).
    pub source: String,
    /// Added through the control API (persisted, removable) rather than the command line.
    pub added_at_runtime: bool,
}

/// What can go wrong changing the streams.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StreamError {
    /// The name is taken.
    #[error("a stream named '{0}' exists")]
    Exists(String),
    /// No such stream.
    #[error("no stream named '{0}'")]
    Unknown(String),
    /// The name is not valid.
    #[error("stream name: {0}")]
    BadName(String),
    /// [`MAX_STREAMS`] reached.
    #[error("at most {MAX_STREAMS} streams")]
    TooMany,
    /// Streams from the command line stay.
    #[error("stream '{0}' comes from the command line and cannot be removed")]
    Fixed(String),
    /// The encoder or the pacer thread could not start.
    #[error("cannot start stream '{0}': {1}")]
    Start(String, String),
}

struct Entry {
    info: StreamInfo,
    buffer: Arc<Mutex<RollingBuffer>>,
    stop: Arc<AtomicBool>,
    pacer: Option<std::thread::JoinHandle<()>>,
}

/// The streams (see the module docs). Dropping it stops every pacer.
pub struct StreamSet {
    dir: Arc<Directory>,
    clock: Arc<dyn Clock>,
    epoch_us: i64,
    codec: Codec,
    buffer_seconds: f64,
    streams: Mutex<BTreeMap<String, Entry>>,
}

impl StreamSet {
    /// No streams yet, on the timeline starting at `epoch_us` (transmitter clock), with
    /// the playout delay of `dir` and rolling buffers of `buffer_seconds`.
    pub fn new(
        dir: Arc<Directory>,
        clock: Arc<dyn Clock>,
        epoch_us: i64,
        codec: Codec,
        buffer_seconds: f64,
    ) -> Self {
        Self {
            dir,
            clock,
            epoch_us,
            codec,
            buffer_seconds,
            streams: Mutex::new(BTreeMap::new()),
        }
    }

    /// PTS of sample 0 of every stream, µs.
    pub fn epoch_us(&self) -> i64 {
        self.epoch_us
    }

    /// Starts stream `name` pulling from `pull`, joining the timeline now.
    ///
    /// Errors: a bad or taken name, [`MAX_STREAMS`] reached, an encoder or thread
    /// that cannot start.
    pub fn add(
        &self,
        name: &str,
        uri: &str,
        source: &str,
        pull: PullAudio,
        added_at_runtime: bool,
    ) -> Result<(), StreamError> {
        check_device_name(name)
            .map_err(|e| StreamError::BadName(e.to_string().replace("device name", "name")))?;
        let mut streams = lock(&self.streams);
        if streams.contains_key(name) {
            return Err(StreamError::Exists(name.into()));
        }
        if streams.len() >= MAX_STREAMS {
            return Err(StreamError::TooMany);
        }
        let start = |e: String| StreamError::Start(name.into(), e);
        let mut encoder = AudioEncoder::new(self.codec, STREAM_SAMPLE_RATE, STREAM_CHANNELS)
            .map_err(|e| start(e.to_string()))?;
        let codec_delay = encoder.delay_samples().map_err(|e| start(e.to_string()))?;
        let hub = StreamHub::new(
            name,
            self.codec,
            codec_delay,
            self.epoch_us,
            self.dir.playout().clone(),
        );
        let buffer = Arc::new(Mutex::new(RollingBuffer::new(
            STREAM_SAMPLE_RATE,
            self.buffer_seconds,
            self.epoch_us,
        )));
        // The chunk due now on the shared timeline.
        let now_samples = ((self.clock.now_us() - self.epoch_us).max(0) as i128
            * STREAM_SAMPLE_RATE as i128
            / 1_000_000) as u64;
        let producer = ChunkProducer::new(pull, encoder).start_at(now_samples);
        let stop = Arc::new(AtomicBool::new(false));
        let pacer = {
            let (clock, buffer, hub, stop, epoch) = (
                self.clock.clone(),
                buffer.clone(),
                hub.clone(),
                stop.clone(),
                self.epoch_us,
            );
            std::thread::Builder::new()
                .name(format!("pacer-{name}"))
                .spawn(move || pacer::run(producer, epoch, clock, buffer, hub, stop))
                .map_err(|e| start(e.to_string()))?
        };
        self.dir.add_hub(hub);
        streams.insert(
            name.to_string(),
            Entry {
                info: StreamInfo {
                    name: name.to_string(),
                    uri: uri.to_string(),
                    source: source.to_string(),
                    added_at_runtime,
                },
                buffer,
                stop,
                pacer: Some(pacer),
            },
        );
        tracing::info!(stream = name, source, "stream started");
        Ok(())
    }

    /// Stops and removes a stream added at runtime; its receivers move to
    /// [`DEFAULT_STREAM`].
    ///
    /// Errors: no such stream, or one from the command line.
    pub fn remove(&self, name: &str) -> Result<(), StreamError> {
        let mut entry = {
            let mut streams = lock(&self.streams);
            match streams.get(name) {
                None => return Err(StreamError::Unknown(name.into())),
                Some(e) if !e.info.added_at_runtime => return Err(StreamError::Fixed(name.into())),
                Some(_) => {}
            }
            streams
                .remove(name)
                .ok_or(StreamError::Unknown(name.into()))?
        };
        self.dir.remove_hub(name);
        entry.stop.store(true, Ordering::Relaxed);
        // The pacer notices within one chunk (a live source never blocks it).
        if let Some(h) = entry.pacer.take() {
            std::thread::spawn(move || {
                let _ = h.join();
            });
        }
        tracing::info!(stream = name, "stream removed");
        Ok(())
    }

    /// The rolling buffer of stream `name`.
    pub fn buffer(&self, name: &str) -> Option<Arc<Mutex<RollingBuffer>>> {
        lock(&self.streams).get(name).map(|e| e.buffer.clone())
    }

    /// Whether stream `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        lock(&self.streams).contains_key(name)
    }

    /// Every stream, by name.
    pub fn list(&self) -> Vec<StreamInfo> {
        lock(&self.streams)
            .values()
            .map(|e| e.info.clone())
            .collect()
    }

    /// The stream receivers play by default.
    pub fn default_name(&self) -> &'static str {
        DEFAULT_STREAM
    }
}

impl Drop for StreamSet {
    fn drop(&mut self) {
        let mut streams = lock(&self.streams);
        for e in streams.values() {
            e.stop.store(true, Ordering::Relaxed);
        }
        for e in streams.values_mut() {
            if let Some(h) = e.pacer.take() {
                let _ = h.join();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
