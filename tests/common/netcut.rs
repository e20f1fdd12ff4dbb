//! Cutting a node off the network: its packets on the loopback interface are dropped by
//! iptables, as a partition or a dead host would drop them. No reset, no refusal: a connection
//! to it just goes quiet, and a new one never completes its handshake.

use std::process::Command;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

/// Starts the comment of this harness's rules; the test process's pid follows, so that a rule
/// left by a killed test can be told from the rules of tests still running, and removed.
const RULE_TAG: &str = "respgate-test-netcut-pid-";

/// Source addresses handed out by this process (see [`source_address`]).
static SOURCES: AtomicU32 = AtomicU32::new(0);

/// Removes, once per process, the rules of test processes that are gone.
static SWEEP: Once = Once::new();

/// Packets dropped until this is dropped (also when the test panics).
#[derive(Default)]
pub struct Cut {
    /// The match part of every rule in place, to delete each on drop.
    rules: Vec<Vec<String>>,
}

impl Cut {
    /// Drops every TCP packet on `lo` to or from each of `ports` (both directions, so neither
    /// requests nor replies nor handshakes pass).
    ///
    /// Panics with install instructions when iptables is missing or refuses (it needs root).
    pub fn ports(ports: &[u16]) -> Cut {
        SWEEP.call_once(sweep_dead);
        let mut cut = Cut::default();
        for &port in ports {
            cut.add(
                ["--dport", "--sport"]
                    .map(|side| strings(&["-p", "tcp", side, &port.to_string()]))
                    .to_vec(),
            );
        }
        cut
    }

    /// Cuts a node off from everyone: its client and bus ports, the connections it opened
    /// itself (to the other nodes' buses, to its master), and any it opens later.
    ///
    /// Its new connections must leave from `source` (from [`source_address`], set as the
    /// node's `bind-source-addr` beforehand), since their ports cannot be known ahead. The
    /// ones already open are found by the node's `pid` in `ss`, and cut by their exact pair of
    /// ports, so that another connection reusing a port number elsewhere is not touched.
    pub fn node(pid: u32, ports: &[u16], source: &str) -> Cut {
        let mut cut = Cut::ports(ports);
        for (local, peer) in outgoing(pid, ports) {
            let (local, peer) = (local.to_string(), peer.to_string());
            cut.add(vec![
                strings(&["-p", "tcp", "--sport", &local, "--dport", &peer]),
                strings(&["-p", "tcp", "--sport", &peer, "--dport", &local]),
            ]);
        }
        cut.add(vec![strings(&["-s", source]), strings(&["-d", source])]);
        cut
    }

    fn add(&mut self, matches: Vec<Vec<String>>) {
        for matched in matches {
            iptables("-I", &matched).unwrap_or_else(|why| {
                panic!(
                    "cannot drop packets with iptables ({why}): run as root, with iptables \
                     installed (`apt-get install -y iptables`, or scripts/test.sh, which \
                     installs it)"
                )
            });
            self.rules.push(matched);
        }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        for matched in &self.rules {
            let _ = iptables("-D", matched);
        }
    }
}

/// A loopback address no other test process hands out, for a node's `bind-source-addr`.
pub fn source_address() -> String {
    let n = SOURCES.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!(
        "127.{}.{}.{}",
        100 + pid % 100,
        (pid / 100) % 250 + 1,
        n % 250 + 1
    )
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// The (local, peer) ports of the TCP connections process `pid` holds, other than those on
/// its own listening `ports` (the connections it opened).
fn outgoing(pid: u32, ports: &[u16]) -> Vec<(u16, u16)> {
    let output = Command::new("ss")
        .args(["-tnpH", "state", "established"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run ss (iproute2): {e}"));
    let owner = format!("pid={pid},");
    let port = |address: &str| address.rsplit(':').next()?.parse::<u16>().ok();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains(&owner))
        .filter_map(|line| {
            // Recv-Q Send-Q Local:Port Peer:Port users:(...)
            let mut fields = line.split_whitespace().skip(2);
            Some((port(fields.next()?)?, port(fields.next()?)?))
        })
        .filter(|(local, _)| !ports.contains(local))
        .collect()
}

/// Deletes the rules of test processes that no longer run (killed by a timeout, say): left
/// in place, they would cut whatever later binds those ports.
fn sweep_dead() {
    let Ok(output) = Command::new("iptables")
        .args(["-w", "-S", "OUTPUT"])
        .output()
    else {
        return;
    };
    for rule in String::from_utf8_lossy(&output.stdout).lines() {
        let Some(pid) = rule
            .split_once(RULE_TAG)
            .and_then(|(_, rest)| rest.split_whitespace().next())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Some(spec) = rule.strip_prefix("-A ") {
            let _ = Command::new("iptables")
                .args(["-w", "-D"])
                .args(spec.split_whitespace())
                .output();
        }
    }
}

/// Runs `iptables -w <action> OUTPUT -o lo <match> -j DROP`, tagged with this process's pid;
/// `-w` waits for the lock another test may hold.
fn iptables(action: &str, matched: &[String]) -> Result<(), String> {
    let tag = format!("{RULE_TAG}{}", std::process::id());
    let output = Command::new("iptables")
        .args(["-w", action, "OUTPUT", "-o", "lo"])
        .args(matched)
        .args(["-m", "comment", "--comment", &tag, "-j", "DROP"])
        .output()
        .map_err(|e| format!("iptables did not run: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}
