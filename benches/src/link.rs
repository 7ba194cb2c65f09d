//! A blocking client of the bridge link (the bridge's command socket): requests with
//! ids, answers matched by id, events kept aside.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use viaduct_bridge::command::protocol::{Event, FromBridge, Reply, Request, RequestBody};

/// A connection to a bridge's command socket.
pub struct Link {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
    /// Events received so far.
    pub events: Vec<Event>,
}

impl Link {
    /// Connects, retrying until `timeout` while the bridge starts.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).with_context(|| format!("connecting to {}", path.display()))
                }
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

    fn read(&mut self) -> Result<FromBridge> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("bridge closed the link");
        }
        let msg: FromBridge = serde_json::from_str(&line).context("bad line from bridge")?;
        if let FromBridge::Event { event } = &msg {
            self.events.push(event.clone());
        }
        Ok(msg)
    }

    /// Sends a request and waits for its answer.
    pub fn request(&mut self, body: RequestBody) -> Result<Reply> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = serde_json::to_string(&Request { id, body })?;
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        loop {
            match self.read()? {
                FromBridge::Response { id: rid, result } if rid == id => return Ok(result),
                FromBridge::Error {
                    id: Some(rid),
                    code,
                    message,
                } if rid == id => return Err(anyhow!("{code:?}: {message}")),
                _ => {}
            }
        }
    }

    /// Waits for an event matching `pred` (already received or new).
    pub fn wait_event(&mut self, mut pred: impl FnMut(&Event) -> bool) -> Result<Event> {
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
