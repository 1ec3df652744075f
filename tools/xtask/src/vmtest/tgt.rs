//! tgtd, the Linux SCSI target framework's daemon, exporting one file-backed LUN over iSCSI on
//! 127.0.0.1 for the two-node test: started in the foreground, configured with tgtadm, and shut
//! down by the guard's `Drop` whatever happened meanwhile.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The target's iSCSI qualified name; each node's initiator name extends it.
pub const TARGET_IQN: &str = "iqn.2026-11.dev.rvscsi:vmtest-pr";
/// The target id tgtadm gives the target.
const TID: &str = "1";
/// The LUN of the disk (tgtd keeps LUN 0 for its controller).
pub const DISK_LUN: u32 = 1;
/// Where tgtd puts its management socket (`socket.<control port>`) and its lock file.
const SOCKET_DIR: &str = "/var/run/tgtd";
/// How long tgtd may take to answer its first management request.
const START_LIMIT: Duration = Duration::from_secs(15);

/// A running tgtd with one target and one LUN; dropping it shuts tgtd down.
pub struct Target {
    daemon: Child,
    /// tgtd's management "port": the suffix of its Unix socket, chosen per run so that this
    /// tgtd never talks to (or fights the lock of) another one.
    control_port: u16,
    /// The iSCSI portal's TCP port on 127.0.0.1.
    pub portal_port: u16,
}

impl Target {
    /// Installs tgt if missing, starts tgtd on a free port of 127.0.0.1 and exports `disk` as
    /// LUN [`DISK_LUN`] of [`TARGET_IQN`], open to initiators on 127.0.0.1. tgtd's output goes
    /// to `log`.
    pub fn start(disk: &Path, log: &Path) -> Result<Self, String> {
        crate::util::ensure_tool("tgtd", "-V", "tgt")?;
        crate::util::ensure_tool("tgtadm", "--help", "tgt")?;
        let portal_port = free_port()?;
        // tgtd reads the control port into a C `short`; any positive value identifies the
        // socket, and the process id keeps concurrent runs apart.
        // tgtd itself replaces a stale socket and refuses a port whose lock a live tgtd holds.
        let control_port = 10_000 + (std::process::id() % 20_000) as u16;
        let output = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let errors = output
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let daemon = Command::new("tgtd")
            .args(["--foreground", "--control-port", &control_port.to_string()])
            .arg("--iscsi")
            .arg(format!("portal=127.0.0.1:{portal_port}"))
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .map_err(|e| format!("cannot start tgtd: {e}"))?;
        // From here on the guard owns tgtd: an error below drops it, which shuts tgtd down.
        let mut target = Self {
            daemon,
            control_port,
            portal_port,
        };
        target.wait_until_up(log)?;
        target.admin(&[
            "--lld",
            "iscsi",
            "--mode",
            "target",
            "--op",
            "new",
            "--tid",
            TID,
            "--targetname",
            TARGET_IQN,
        ])?;
        let disk_path = disk.to_str().ok_or("the disk path is not UTF-8")?;
        target.admin(&[
            "--lld",
            "iscsi",
            "--mode",
            "logicalunit",
            "--op",
            "new",
            "--tid",
            TID,
            "--lun",
            &DISK_LUN.to_string(),
            "--backing-store",
            disk_path,
        ])?;
        target.admin(&[
            "--lld",
            "iscsi",
            "--mode",
            "target",
            "--op",
            "bind",
            "--tid",
            TID,
            "--initiator-address",
            "127.0.0.1",
        ])?;
        Ok(target)
    }

    /// Waits until tgtd answers on its management socket, or fails with its log's last line
    /// if it exits or stays silent.
    fn wait_until_up(&mut self, log: &Path) -> Result<(), String> {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(Some(status)) = self.daemon.try_wait() {
                let text = fs::read_to_string(log).unwrap_or_default();
                return Err(format!("tgtd exited with {status}: {text}"));
            }
            if self
                .admin_quiet(&["--lld", "iscsi", "--mode", "target", "--op", "show"])
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "tgtd did not answer on control port {} within {}s",
                    self.control_port,
                    START_LIMIT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs tgtadm against this tgtd, echoing the command.
    fn admin(&self, args: &[&str]) -> Result<(), String> {
        eprintln!("vmtest: tgtadm {}", args.join(" "));
        self.admin_quiet(args)
    }

    fn admin_quiet(&self, args: &[&str]) -> Result<(), String> {
        let output = Command::new("tgtadm")
            .args(["--control-port", &self.control_port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run tgtadm: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "tgtadm {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }
}

impl Drop for Target {
    /// Deletes the target (forcing its sessions closed) and then the system, which makes tgtd
    /// exit; kills it if it is still there a moment later; removes its socket files.
    fn drop(&mut self) {
        let _ = self.admin_quiet(&[
            "--lld", "iscsi", "--mode", "target", "--op", "delete", "--force", "--tid", TID,
        ]);
        let _ = self.admin_quiet(&["--mode", "system", "--op", "delete"]);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.daemon.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // tgtd ignores SIGTERM; SIGKILL through the handle ends this process only.
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        remove_socket_files(self.control_port);
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

/// The management socket and lock file of the tgtd on `control_port`.
fn socket_files(control_port: u16) -> [PathBuf; 2] {
    let socket = Path::new(SOCKET_DIR).join(format!("socket.{control_port}"));
    let lock = Path::new(SOCKET_DIR).join(format!("socket.{control_port}.lock"));
    [socket, lock]
}

fn remove_socket_files(control_port: u16) {
    for path in socket_files(control_port) {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_files_are_named_after_the_control_port() {
        let [socket, lock] = socket_files(12345);
        assert_eq!(socket, Path::new("/var/run/tgtd/socket.12345"));
        assert_eq!(lock, Path::new("/var/run/tgtd/socket.12345.lock"));
    }

    #[test]
    fn free_ports_are_bindable() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}
