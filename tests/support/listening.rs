//! Whether a given process is the one listening on a TCP port, read from /proc.
//!
//! A successful connect to a server's port only says that something answered there. The suites
//! wait on this instead, so that they never start talking to a port before their own server
//! listens on it, and they can say who else held the port when something did.

use std::collections::HashSet;

/// The inodes of the sockets listening on TCP `port` (IPv4 and IPv6) in this network namespace.
fn listening_inodes(port: u16) -> HashSet<u64> {
    const LISTEN: &str = "0A";
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        // Fields: sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
        for fields in text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
        {
            let local_port = fields
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && fields.get(3) == Some(&LISTEN) {
                if let Some(inode) = fields.get(9).and_then(|i| i.parse().ok()) {
                    inodes.insert(inode);
                }
            }
        }
    }
    inodes
}

/// The socket inodes among process `pid`'s open files.
fn socket_inodes_of(pid: u32) -> HashSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Whether process `pid` holds a socket listening on TCP `port`.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let listening = listening_inodes(port);
    !listening.is_empty() && !socket_inodes_of(pid).is_disjoint(&listening)
}

/// Who holds a socket listening on TCP `port`: "pid (command line)" for each process whose
/// files this process may read, or what /proc says when it names none.
pub fn listeners_of(port: u16) -> String {
    let listening = listening_inodes(port);
    if listening.is_empty() {
        return format!("no socket listens on port {port} now");
    }
    let mut holders = vec![];
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for entry in procs.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if !socket_inodes_of(pid).is_disjoint(&listening) {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                holders.push(format!("{pid} ({})", cmdline.trim()));
            }
        }
    }
    if holders.is_empty() {
        format!("sockets {listening:?} listen on port {port}, held by no readable process")
    } else {
        format!("port {port} is listened on by {}", holders.join(", "))
    }
}

/// Why a server is not serving.
#[derive(Debug)]
pub enum NotServing {
    /// The process ended: what the liveness check said.
    Exited(String),
    /// The deadline passed with the process running but not listening.
    NotListening,
}

/// Waits for the connect to `port` to be answered by process `pid` itself, checking `alive`
/// between tries, until `deadline`. A port that answers while `pid` does not listen on it is
/// reported once on stderr (with who listens there), since the test would otherwise talk to a
/// stranger or to nobody.
pub fn wait_until_serving(
    pid: u32,
    port: u16,
    deadline: std::time::Instant,
    mut alive: impl FnMut() -> Result<(), String>,
) -> Result<(), NotServing> {
    let mut reported_stranger = false;
    while std::time::Instant::now() < deadline {
        alive().map_err(NotServing::Exited)?;
        if listens_on(pid, port) && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if !reported_stranger && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            reported_stranger = true;
            eprintln!(
                "port {port} answered before process {pid} listened on it: {}",
                listeners_of(port)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(NotServing::NotListening)
}
