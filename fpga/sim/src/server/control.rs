//! The control socket (`<socket>.ctl`): a line protocol for tests and tools.
//! See the module docs of [`crate::server`] for the commands.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;

use super::Core;

/// One connected control client.
#[derive(Debug)]
pub struct CtlConn {
    /// The socket (non-blocking).
    pub sock: UnixStream,
    buf: Vec<u8>,
}

impl CtlConn {
    /// Wrap an accepted control connection.
    pub fn new(sock: UnixStream) -> std::io::Result<Self> {
        sock.set_nonblocking(true)?;
        Ok(CtlConn {
            sock,
            buf: Vec::new(),
        })
    }

    /// Read what is available and answer every complete line. Returns false
    /// when the client has gone.
    pub fn service(&mut self, core: &mut Core, client_connected: bool) -> bool {
        let mut tmp = [0u8; 4096];
        loop {
            match self.sock.read(&mut tmp) {
                Ok(0) => return false,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
            if self.buf.len() > 1 << 16 {
                return false;
            }
        }
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line).trim().to_string();
            if line.is_empty() {
                continue;
            }
            let out = match command(core, client_connected, &line) {
                Ok(lines) => lines
                    .into_iter()
                    .chain(["ok".to_string()])
                    .collect::<Vec<_>>(),
                Err(e) => vec![format!("err {e}")],
            };
            let mut text = out.join("\n");
            text.push('\n');
            // Control answers are small; write them out blocking.
            let _ = self.sock.set_nonblocking(false);
            let ok = self.sock.write_all(text.as_bytes()).is_ok();
            let _ = self.sock.set_nonblocking(true);
            if !ok {
                return false;
            }
        }
        true
    }
}

fn parse_opt(v: Option<&str>) -> Result<Option<u64>, String> {
    match v {
        Some("off") => Ok(None),
        Some(n) => n
            .parse()
            .map(Some)
            .map_err(|_| format!("not a number: {n}")),
        None => Err("missing value".into()),
    }
}

fn command(core: &mut Core, client: bool, line: &str) -> Result<Vec<String>, String> {
    let w: Vec<&str> = line.split_whitespace().collect();
    match w.as_slice() {
        ["status"] => {
            let c = &core.card;
            Ok(vec![format!(
                "cycles {} quiescent {} dead {} client {} bus_master {} mappings {} irqs {} faults {}",
                c.cycles(),
                c.is_quiescent() as u8,
                c.is_dead() as u8,
                client as u8,
                c.bus_master() as u8,
                core.iommu.len(),
                core.device.msix.delivered,
                c.fault_log().total()
            )])
        }
        ["faults"] => {
            let f = core.card.faults();
            let d = *core.dma_faults.lock().unwrap_or_else(|p| p.into_inner());
            let opt = |v: Option<u64>| v.map_or("off".to_string(), |n| n.to_string());
            Ok(vec![format!(
                "link-down {} die-after {} corrupt-host-writes {} dma-reply-delay {} dma-reply-fail-after {}",
                if f.link_down { "on" } else { "off" },
                opt(f.die_after_cycles),
                f.corrupt_host_writes,
                d.reply_delay_ms,
                opt(d.fail_after)
            )])
        }
        ["fault", "link-down", v] => {
            core.card.faults_mut().link_down = match *v {
                "on" => true,
                "off" => false,
                _ => return Err(format!("link-down takes on or off, not {v}")),
            };
            Ok(vec![])
        }
        ["fault", "die-after", v] => {
            core.card.faults_mut().die_after_cycles = parse_opt(Some(v))?;
            Ok(vec![])
        }
        ["fault", "corrupt-host-writes", v] => {
            core.card.faults_mut().corrupt_host_writes = parse_opt(Some(v))?.unwrap_or(0);
            Ok(vec![])
        }
        ["fault", "dma-reply-delay", v] => {
            let ms = parse_opt(Some(v))?.unwrap_or(0);
            core.dma_faults
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .reply_delay_ms = ms;
            Ok(vec![])
        }
        ["fault", "dma-reply-fail-after", v] => {
            let n = parse_opt(Some(v))?;
            core.dma_faults
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .fail_after = n;
            Ok(vec![])
        }
        ["fault-log"] => Ok(core
            .card
            .fault_log()
            .records()
            .map(|r| r.to_string())
            .collect()),
        ["fault-log", "clear"] => {
            core.card.fault_log_mut().clear();
            Ok(vec![])
        }
        _ => Err(format!("unknown command: {line}")),
    }
}

/// The client side of the control socket, for tests and tools: send one
/// command to the server whose vfio-user socket is `socket`, and return the
/// lines it answered before `ok`, or the text of its `err` line.
pub fn request(
    socket: &std::path::Path,
    cmd: &str,
) -> std::io::Result<Result<Vec<String>, String>> {
    use std::io::BufRead;
    let mut s = UnixStream::connect(format!("{}.ctl", socket.display()))?;
    writeln!(s, "{cmd}")?;
    let mut lines = Vec::new();
    for l in std::io::BufReader::new(s).lines() {
        let l = l?;
        if l == "ok" {
            return Ok(Ok(lines));
        }
        if let Some(e) = l.strip_prefix("err") {
            return Ok(Err(e.trim().to_string()));
        }
        lines.push(l);
    }
    Err(std::io::Error::new(
        ErrorKind::UnexpectedEof,
        format!("control socket closed during {cmd:?}"),
    ))
}
