//! A blocking client of the bridge link, for tests, benchmarks and tools: requests
//! with ids, answers matched by id, events kept aside. (The control service has its own
//! asynchronous client with reconnects.)

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::protocol::{ErrorCode, Event, FromBridge, Reply, Request, RequestBody, StatsSnapshot};

/// Why a link call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Socket trouble (including a read timeout).
    #[error("bridge link: {0}")]
    Io(#[from] std::io::Error),
    /// The bridge closed the connection.
    #[error("bridge closed the link")]
    Closed,
    /// The bridge sent a line that is not a protocol message.
    #[error("bad line from the bridge: {0}")]
    BadLine(#[from] serde_json::Error),
    /// The bridge refused the request.
    #[error("{code:?}: {message}")]
    Refused {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The bridge answered with an unexpected kind of result.
    #[error("unexpected reply {0:?}")]
    Unexpected(Box<Reply>),
}

/// A connection to a bridge's command socket.
pub struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
    /// Events received so far.
    pub events: Vec<Event>,
}

impl Client {
    /// Connects, retrying for up to `patience` while the bridge starts. Reads time out
    /// after 10 s.
    pub fn connect(path: &Path, patience: Duration) -> Result<Self, ClientError> {
        let deadline = Instant::now() + patience;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => return Err(e.into()),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
            next_id: 1,
            events: Vec::new(),
        })
    }

    /// Writes one raw line (for tests of bad input).
    pub fn send_line(&mut self, line: &str) -> Result<(), ClientError> {
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\n")?;
        Ok(())
    }

    /// Reads the next line (events are also kept in `events`).
    pub fn read(&mut self) -> Result<FromBridge, ClientError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(ClientError::Closed);
        }
        let msg: FromBridge = serde_json::from_str(&line)?;
        if let FromBridge::Event { event } = &msg {
            self.events.push(event.clone());
        }
        Ok(msg)
    }

    /// Sends a request and waits for its answer.
    pub fn request(&mut self, body: RequestBody) -> Result<Reply, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send_line(&serde_json::to_string(&Request { id, body })?)?;
        loop {
            match self.read()? {
                FromBridge::Response { id: rid, result } if rid == id => return Ok(result),
                FromBridge::Error {
                    id: Some(rid),
                    code,
                    message,
                } if rid == id => return Err(ClientError::Refused { code, message }),
                _ => {}
            }
        }
    }

    /// The bridge's counters.
    pub fn stats(&mut self) -> Result<StatsSnapshot, ClientError> {
        match self.request(RequestBody::Stats)? {
            Reply::Stats(s) => Ok(*s),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Waits for an event matching `pred` (already received or new).
    pub fn wait_event(
        &mut self,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Result<Event, ClientError> {
        if let Some(e) = self.events.iter().find(|e| pred(e)) {
            return Ok(e.clone());
        }
        loop {
            if let FromBridge::Event { event } = self.read()? {
                if pred(&event) {
                    return Ok(event);
                }
            }
        }
    }
}
