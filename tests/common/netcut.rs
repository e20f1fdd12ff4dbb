//! Cutting a node off the network: its packets on the loopback interface are dropped by
//! iptables, as a partition or a dead host would drop them. No reset, no refusal: a connection
//! to it just goes quiet, and a new one never completes its handshake.

use std::process::Command;

/// Tags this harness's rules, so a rule left by a killed test can be told from anyone else's.
const RULE_COMMENT: &str = "respgate-test-netcut";

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
        let mut cut = Cut::default();
        for &port in ports {
            cut.add(port_rules(port));
        }
        cut
    }

    /// Cuts a node off from everyone: its client and bus ports, the connections it opened
    /// itself (to the other nodes' buses, to its master), and any it opens later.
    ///
    /// Its new connections must leave from `source` (a loopback address no one else uses, set
    /// as the node's `bind-source-addr` beforehand), since their ports cannot be known ahead.
    /// The ones already open are found by the node's `pid` in `ss`.
    pub fn node(pid: u32, ports: &[u16], source: &str) -> Cut {
        let mut cut = Cut::ports(ports);
        for port in outgoing_ports(pid, ports) {
            cut.add(port_rules(port));
        }
        cut.add(["-s", "-d"].map(|side| [side, source].map(String::from).to_vec()));
        cut
    }

    fn add(&mut self, matches: impl IntoIterator<Item = Vec<String>>) {
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

/// The matches cutting one port: packets sent to it, and packets sent from it.
fn port_rules(port: u16) -> [Vec<String>; 2] {
    ["--dport", "--sport"].map(|side| {
        ["-p", "tcp", side, &port.to_string()]
            .map(String::from)
            .to_vec()
    })
}

/// The local ports of the TCP connections process `pid` holds, other than its own listening
/// `ports` (the connections it opened).
fn outgoing_ports(pid: u32, ports: &[u16]) -> Vec<u16> {
    let output = Command::new("ss")
        .args(["-tnpH", "state", "established"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run ss (iproute2): {e}"));
    let owner = format!("pid={pid},");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains(&owner))
        .filter_map(|line| {
            // Recv-Q Send-Q Local:Port Peer:Port users:(...)
            let local = line.split_whitespace().nth(2)?;
            local.rsplit(':').next()?.parse().ok()
        })
        .filter(|port| !ports.contains(port))
        .collect()
}

/// Runs `iptables -w <action> OUTPUT -o lo <match> -j DROP`, tagged with [`RULE_COMMENT`]; `-w`
/// waits for the lock another test may hold.
fn iptables(action: &str, matched: &[String]) -> Result<(), String> {
    let output = Command::new("iptables")
        .args(["-w", action, "OUTPUT", "-o", "lo"])
        .args(matched)
        .args(["-m", "comment", "--comment", RULE_COMMENT, "-j", "DROP"])
        .output()
        .map_err(|e| format!("iptables did not run: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}
