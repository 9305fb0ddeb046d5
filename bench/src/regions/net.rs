//! The simulated network between the gateway and the five regions, and the cut.
//!
//! **Namespaces** (when this machine allows `ip netns add`: root and iproute2): each region's
//! mock runs in its own network namespace `bench-rsim-N`, reached from the root namespace (where
//! the gateway and the clients are) over a veth pair, `10.250.N.1` (root side) to `10.250.N.2`
//! (the region). Latency is `tc netem delay` on both ends of the link (half the round trip
//! each) when the kernel has netem; otherwise the mock's own per-request delay (`--delay-ms`,
//! the whole round trip). The cut drops every packet on the region's link: the neighbour
//! entries at both ends are pointed at a MAC address that no interface has, so every frame
//! that crosses the link is discarded by the receiving end (no RST, no ICMP): connects time out
//! and established connections go silent, as when a region's network goes away. Bringing the
//! region back deletes those entries (the link resolves its neighbours again).
//!
//! **Loopback** (the fallback): every mock on 127.0.0.1 with `--delay-ms`; the cut is the mock's
//! `{"hang": true}` fault, so connections are accepted and never answered: a hang, not dropped
//! packets (connects succeed; only the first-byte timeout sees it).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;

use super::analysis::NetInfo;
use super::load::HttpClient;
use super::{NetMode, REGIONS};

pub const NS_PREFIX: &str = "bench-rsim-";
const IF_PREFIX: &str = "brsim";
/// A locally administered unicast address that no interface here has.
const NOBODY_MAC: &str = "02:00:5e:00:de:ad";

struct Link {
    ns: String,
    host_if: String,
    ns_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

enum Mode {
    Netns(Vec<Link>),
    Loopback(Vec<SocketAddr>),
}

pub struct Network {
    mode: Mode,
    /// `None`: the kernel delays the packets (netem); else the mock's per-request delay, ms.
    mock_delay_ms: Option<Vec<u64>>,
    info: NetInfo,
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

/// Removes the namespaces (and whatever still runs in them) and links of an earlier run.
pub fn remove_leftovers() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for ns in list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(NS_PREFIX))
    {
        if let Ok(pids) = ip(&["netns", "pids", ns]) {
            for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        let _ = ip(&["netns", "delete", ns]);
    }
    if let Ok(links) = ip(&["-o", "link", "show"]) {
        for name in links.lines().filter_map(|l| {
            l.split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        }) {
            if name.starts_with(IF_PREFIX) {
                let _ = ip(&["link", "delete", &name]);
            }
        }
    }
}

impl Network {
    /// `rtts`: each region's simulated round trip, ms.
    pub fn setup(mode: NetMode, rtts: &[f64]) -> Result<Network, String> {
        match mode {
            NetMode::Loopback => Ok(loopback(rtts, "asked for (`--net loopback`)".into())),
            NetMode::Netns => netns(rtts),
            NetMode::Auto => netns(rtts).or_else(|e| {
                remove_leftovers();
                Ok(loopback(
                    rtts,
                    format!("network namespaces are not available here ({e})"),
                ))
            }),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{}; latency: {}; cut: {}",
            self.info.mode, self.info.latency, self.info.cut
        )
    }

    pub fn info(&self) -> NetInfo {
        self.info.clone()
    }

    /// Where region `i`'s mock listens (`port` is used inside a namespace).
    pub fn mock_addr(&self, i: usize, port: u16) -> SocketAddr {
        match &self.mode {
            Mode::Netns(links) => SocketAddr::from((links[i].ns_ip, port)),
            Mode::Loopback(addrs) => addrs[i],
        }
    }

    /// The mock's `--delay-ms`, when the network itself adds no latency.
    pub fn mock_delay_ms(&self, i: usize) -> Option<u64> {
        self.mock_delay_ms.as_ref().map(|d| d[i])
    }

    /// The command that runs `program` in region `i`.
    pub fn wrap(
        &self,
        i: usize,
        program: std::path::PathBuf,
        args: Vec<String>,
    ) -> (std::path::PathBuf, Vec<String>) {
        match &self.mode {
            Mode::Netns(links) => {
                let mut a = vec!["netns".into(), "exec".into(), links[i].ns.clone()];
                a.push(program.display().to_string());
                a.extend(args);
                ("ip".into(), a)
            }
            Mode::Loopback(_) => (program, args),
        }
    }

    /// Cuts region `i` off; returns what was done.
    pub async fn cut(&self, i: usize, client: &HttpClient) -> Result<String, String> {
        match &self.mode {
            Mode::Netns(links) => {
                let l = links[i].clone_parts();
                tokio::task::spawn_blocking(move || {
                    ip(&[
                        "neigh",
                        "replace",
                        &l.3,
                        "lladdr",
                        NOBODY_MAC,
                        "dev",
                        &l.1,
                        "nud",
                        "permanent",
                    ])?;
                    ip(&[
                        "-n",
                        &l.0,
                        "neigh",
                        "replace",
                        &l.4,
                        "lladdr",
                        NOBODY_MAC,
                        "dev",
                        &l.2,
                        "nud",
                        "permanent",
                    ])?;
                    Ok::<_, String>(())
                })
                .await
                .map_err(|e| e.to_string())??;
                Ok("every packet on its link dropped".into())
            }
            Mode::Loopback(addrs) => {
                fault(client, addrs[i], Method::POST, r#"{"hang":true}"#).await?;
                Ok("its mock hangs (accepts, never answers)".into())
            }
        }
    }

    /// Brings region `i` back.
    pub async fn restore(&self, i: usize, client: &HttpClient) -> Result<String, String> {
        match &self.mode {
            Mode::Netns(links) => {
                let l = links[i].clone_parts();
                tokio::task::spawn_blocking(move || {
                    ip(&["neigh", "delete", &l.3, "dev", &l.1])?;
                    ip(&["-n", &l.0, "neigh", "delete", &l.4, "dev", &l.2])?;
                    Ok::<_, String>(())
                })
                .await
                .map_err(|e| e.to_string())??;
                Ok("its link passes packets again".into())
            }
            Mode::Loopback(addrs) => {
                fault(client, addrs[i], Method::DELETE, "").await?;
                Ok("its mock answers again".into())
            }
        }
    }
}

impl Link {
    /// (namespace, host interface, namespace interface, the region's address, the root side's)
    fn clone_parts(&self) -> (String, String, String, String, String) {
        (
            self.ns.clone(),
            self.host_if.clone(),
            self.ns_if.clone(),
            self.ns_ip.to_string(),
            self.host_ip.to_string(),
        )
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Mode::Netns(_) = self.mode {
            remove_leftovers();
        }
    }
}

async fn fault(
    client: &HttpClient,
    addr: SocketAddr,
    method: Method,
    body: &'static str,
) -> Result<(), String> {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}/__fault"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .map_err(|e| e.to_string())?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("{addr}/__fault: {e}"))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("{addr}/__fault: {}", resp.status()))
    }
}

fn mock_delays(rtts: &[f64]) -> Vec<u64> {
    rtts.iter().map(|r| r.round() as u64).collect()
}

fn loopback(rtts: &[f64], why: String) -> Network {
    let addrs = (0..REGIONS.len())
        .map(|_| SocketAddr::from(([127, 0, 0, 1], crate::targets::free_port())))
        .collect::<Vec<_>>();
    Network {
        info: NetInfo {
            mode: "loopback".into(),
            latency: "the mock's per-request delay (`--delay-ms`, the whole round trip)".into(),
            cut: "the mock's `hang` fault: connections are accepted and never answered (a hang, not dropped packets)".into(),
            why: Some(why),
            addresses: addrs.iter().map(|a| a.to_string()).collect(),
            mock_delay_ms: Some(mock_delays(rtts)),
            netem_one_way_us: None,
        },
        mode: Mode::Loopback(addrs),
        mock_delay_ms: Some(mock_delays(rtts)),
    }
}

fn netns(rtts: &[f64]) -> Result<Network, String> {
    remove_leftovers();
    // Dropping this removes whatever was made, so a failure half way leaves nothing behind.
    let mut net = Network {
        mode: Mode::Netns(Vec::new()),
        mock_delay_ms: None,
        info: NetInfo::default(),
    };
    let mut links = Vec::new();
    for i in 0..REGIONS.len() {
        let l = Link {
            ns: format!("{NS_PREFIX}{i}"),
            host_if: format!("{IF_PREFIX}{i}"),
            ns_if: format!("{IF_PREFIX}{i}n"),
            host_ip: Ipv4Addr::new(10, 250, i as u8, 1),
            ns_ip: Ipv4Addr::new(10, 250, i as u8, 2),
        };
        let host_cidr = format!("{}/30", l.host_ip);
        let ns_cidr = format!("{}/30", l.ns_ip);
        ip(&["netns", "add", &l.ns])?;
        ip(&[
            "link", "add", &l.host_if, "type", "veth", "peer", "name", &l.ns_if, "netns", &l.ns,
        ])?;
        ip(&["addr", "add", &host_cidr, "dev", &l.host_if])?;
        ip(&["link", "set", &l.host_if, "up"])?;
        ip(&["-n", &l.ns, "addr", "add", &ns_cidr, "dev", &l.ns_if])?;
        ip(&["-n", &l.ns, "link", "set", &l.ns_if, "up"])?;
        ip(&["-n", &l.ns, "link", "set", "lo", "up"])?;
        links.push(l);
    }
    // Latency in the kernel when it has netem: half the round trip on each end of each link.
    let one_way_us: Vec<u64> = rtts.iter().map(|r| (r * 500.0).round() as u64).collect();
    let mut netem = Ok(());
    for (l, us) in links.iter().zip(&one_way_us) {
        let delay = format!("{us}us");
        netem = run(
            "tc",
            &[
                "qdisc", "add", "dev", &l.host_if, "root", "netem", "delay", &delay,
            ],
        )
        .and_then(|_| {
            run(
                "ip",
                &[
                    "netns", "exec", &l.ns, "tc", "qdisc", "add", "dev", &l.ns_if, "root", "netem",
                    "delay", &delay,
                ],
            )
        })
        .map(|_| ());
        if netem.is_err() {
            break;
        }
    }
    let addresses = links
        .iter()
        .map(|l| format!("{} (namespace {})", l.ns_ip, l.ns))
        .collect();
    let cut = "every packet on the region's link dropped: the neighbour entries at both ends point to a MAC address no interface has, so each frame is discarded on arrival (no RST, no ICMP): connects time out, open connections go silent".to_string();
    let info = match &netem {
        Ok(()) => NetInfo {
            mode: "netns".into(),
            latency: "`tc netem delay` on both ends of each region's veth link (half the round trip each)".into(),
            cut,
            why: None,
            addresses,
            mock_delay_ms: None,
            netem_one_way_us: Some(one_way_us),
        },
        Err(e) => {
            // Undo any netem that did get added: the mocks' delay stands for the whole trip.
            for l in &links {
                let _ = run("tc", &["qdisc", "del", "dev", &l.host_if, "root"]);
                let _ = run(
                    "ip",
                    &["netns", "exec", &l.ns, "tc", "qdisc", "del", "dev", &l.ns_if, "root"],
                );
            }
            NetInfo {
                mode: "netns".into(),
                latency: "the mock's per-request delay (`--delay-ms`, the whole round trip): this kernel has no `tc netem`".into(),
                cut,
                why: Some(format!("netem: {e}")),
                addresses,
                mock_delay_ms: Some(mock_delays(rtts)),
                netem_one_way_us: None,
            }
        }
    };
    net.mock_delay_ms = info.mock_delay_ms.clone();
    net.info = info;
    net.mode = Mode::Netns(links);
    Ok(net)
}
