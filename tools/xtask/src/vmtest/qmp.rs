//! The host's QMP client (QEMU Machine Protocol: one JSON object per line), used to hot-plug
//! and unplug disks while a guest runs.

use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A QMP connection (QEMU Machine Protocol: one JSON object per line).
pub(super) struct Qmp {
    pub(super) reader: BufReader<UnixStream>,
    pub(super) writer: UnixStream,
}

impl Qmp {
    /// Connects (QEMU creates the socket shortly after starting) and leaves capabilities
    /// negotiation mode.
    pub(super) fn connect(path: &Path, limit: Duration) -> Result<Self, String> {
        let deadline = Instant::now() + limit;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("cannot connect to QMP at {}: {e}", path.display())),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| format!("QMP socket: {e}"))?;
        let writer = stream.try_clone().map_err(|e| format!("QMP socket: {e}"))?;
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("unexpected QMP greeting {greeting}"));
        }
        qmp.execute("qmp_capabilities", &json!({}))?;
        Ok(qmp)
    }

    /// Reads one message.
    pub(super) fn read_message(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let read = self
            .reader
            .read_line(&mut line)
            .map_err(|e| format!("QMP read: {e}"))?;
        if read == 0 {
            return Err("QMP connection closed".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("QMP sent {line:?}: {e}"))
    }

    /// Runs a command after which the guest may finish and QEMU exit before it answers (the
    /// guest checks the command's effect itself, and QEMU's exit status is checked): a
    /// connection closed or reset before the reply counts as done.
    pub(super) fn execute_unless_gone(
        &mut self,
        command: &str,
        arguments: &Value,
    ) -> Result<(), String> {
        let request = json!({ "execute": command, "arguments": arguments });
        eprintln!("vmtest: QMP {request}");
        writeln!(self.writer, "{request}").map_err(|e| format!("QMP write: {e}"))?;
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(format!("QMP read: {e}")),
                Ok(_) => {}
            }
            let message: Value =
                serde_json::from_str(&line).map_err(|e| format!("QMP sent {line:?}: {e}"))?;
            match classify(&message) {
                QmpMessage::Return(_) => return Ok(()),
                QmpMessage::Error(description) => {
                    return Err(format!("QMP {command} failed: {description}"));
                }
                QmpMessage::Event => {}
                QmpMessage::Other => return Err(format!("unexpected QMP message {message}")),
            }
        }
    }

    /// Runs a command and returns its `return` value; events arriving meanwhile are skipped
    /// (the guest, not the host, checks what a hot-plug did).
    pub(super) fn execute(&mut self, command: &str, arguments: &Value) -> Result<Value, String> {
        let request = json!({ "execute": command, "arguments": arguments });
        eprintln!("vmtest: QMP {request}");
        writeln!(self.writer, "{request}").map_err(|e| format!("QMP write: {e}"))?;
        loop {
            let message = self.read_message()?;
            match classify(&message) {
                QmpMessage::Return(value) => return Ok(value),
                QmpMessage::Error(description) => {
                    return Err(format!("QMP {command} failed: {description}"));
                }
                QmpMessage::Event => {}
                QmpMessage::Other => return Err(format!("unexpected QMP message {message}")),
            }
        }
    }
}

/// What a QMP message is.
#[derive(Debug, PartialEq)]
pub(super) enum QmpMessage {
    Return(Value),
    Error(String),
    Event,
    Other,
}

pub(super) fn classify(message: &Value) -> QmpMessage {
    if let Some(value) = message.get("return") {
        QmpMessage::Return(value.clone())
    } else if let Some(error) = message.get("error") {
        let class = error.get("class").and_then(Value::as_str).unwrap_or("?");
        let desc = error.get("desc").and_then(Value::as_str).unwrap_or("?");
        QmpMessage::Error(format!("{class}: {desc}"))
    } else if message.get("event").is_some() {
        QmpMessage::Event
    } else {
        QmpMessage::Other
    }
}
