//! Which process holds which TCP socket, read from /proc (`/proc/net/tcp`, `/proc/PID/fd`).
//!
//! A successful connect to a server's port only says that something answered there. The suites
//! wait until the server's own process listens on it instead, so that they never start talking
//! to a port before their own server listens on it, and they can say who else held the port
//! when something did. The partition helpers use the same tables to find which member owns a
//! connection.

use std::collections::HashSet;

/// One row of the kernel's TCP socket tables.
struct TcpSocket {
    local_port: u16,
    remote_port: u16,
    listening: bool,
    inode: u64,
}

/// Every TCP socket (IPv4 and IPv6) in this network namespace.
fn tcp_sockets() -> Vec<TcpSocket> {
    const LISTEN: &str = "0A";
    let port_of = |field: &str| {
        let hex = field.rsplit(':').next()?;
        u16::from_str_radix(hex, 16).ok()
    };
    let mut sockets = vec![];
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        // Fields: sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() <= 9 {
                continue;
            }
            let (Some(local_port), Some(remote_port), Ok(inode)) =
                (port_of(fields[1]), port_of(fields[2]), fields[9].parse())
            else {
                continue;
            };
            sockets.push(TcpSocket {
                local_port,
                remote_port,
                listening: fields[3] == LISTEN,
                inode,
            });
        }
    }
    sockets
}

/// The inodes of the sockets listening on TCP `port`.
fn listening_inodes(port: u16) -> HashSet<u64> {
    tcp_sockets()
        .into_iter()
        .filter(|s| s.listening && s.local_port == port)
        .map(|s| s.inode)
        .collect()
}

/// The inode of the socket whose local port is `local` and remote port `remote`.
pub fn connection_inode(local: u16, remote: u16) -> Option<u64> {
    tcp_sockets()
        .into_iter()
        .find(|s| s.local_port == local && s.remote_port == remote)
        .map(|s| s.inode)
}

/// The socket inodes among process `pid`'s open files.
pub fn socket_inodes_of(pid: u32) -> HashSet<u64> {
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
    /// The process ended, with this status.
    Exited(std::process::ExitStatus),
    /// The deadline passed with the process running but not listening.
    NotListening,
}

/// Waits for the connect to `port` to be answered by process `child` itself, until `deadline`
/// or until `child` exits. A port that answers while `child` does not listen on it is reported
/// once on stderr (with who listens there), since the test would otherwise talk to a stranger
/// or to nobody.
pub fn wait_until_serving(
    child: &mut std::process::Child,
    port: u16,
    deadline: std::time::Instant,
) -> Result<(), NotServing> {
    let pid = child.id();
    let mut reported_stranger = false;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(NotServing::Exited(status));
        }
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
