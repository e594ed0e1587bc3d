//! Test hosts on one machine: network namespaces on a bridge of their own, each with its
//! own address, so that a fault can be what it is across machines. On loopback a killed
//! peer resets its connections and clients notice in microseconds; a machine that loses
//! power, an instance that is terminated, or a primary whose address a failover leaves
//! behind goes **silent** instead: no reset, no FIN, every packet dropped. A [`Host`] can
//! be made silent, be **partitioned** from another host, and have the **names** it
//! resolves moved (its own `/etc/hosts`, as ElastiCache moves its primary endpoint's DNS
//! name to the promoted replica).
//!
//! How (iproute2 and iptables, as root):
//!
//! - a [`Network`] is a Linux bridge `ec<n>br` with `10.213.<n>.1/24` in the test's own
//!   namespace, so the test process, nginx and the fault proxy reach every host; Docker
//!   sets iptables' FORWARD policy to DROP and bridged frames pass iptables, so the
//!   network adds its own FORWARD accept rule for the bridge and removes it on drop;
//! - a [`Host`] is a namespace `ec<n>-<name>` with one veth end `eth0` on the bridge,
//!   `10.213.<n>.<10+k>`, and its own `/etc/netns/ec<n>-<name>/hosts`, which
//!   `ip netns exec` binds over `/etc/hosts` for the programs started there;
//! - silence and partitions are DROP rules in two chains of the host's own iptables
//!   (`ecin` from INPUT, `ecout` from OUTPUT), on `eth0` only: the host's loopback keeps
//!   working, so the harness can still reach a silent Redis with `redis-cli` from inside
//!   (to demote it before its packets flow again, say).
//!
//! Everything is removed when the [`Network`] and its hosts are dropped, also when a test
//! fails. A network left behind by a killed test process (its owner's pid in
//! `/run/elastic-cart-testnet/<n>`) is removed by the next one that starts. The
//! kernel here has no netem: latency between hosts comes from [`crate::proxy::FaultProxy`].

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::binaries::require;

/// Where the networks' owner files live.
const OWNERS: &str = "/run/elastic-cart-testnet";

/// Networks of this process are numbered from here, so they stay clear of addresses a
/// person might use by hand (10.213.0.x) and of each other.
const FIRST_NETWORK: u8 = 10;

/// Guards the choice of a network number within this process.
static CHOOSING: Mutex<()> = Mutex::new(());

/// Runs `program args...`; panics with what it printed if it fails.
fn run(program: &Path, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("running {} {args:?}: {err}", program.display()));
    assert!(
        output.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `program args...`, ignoring the outcome (cleanup of what may be gone already).
fn run_quietly(program: &Path, args: &[&str]) {
    let _ = Command::new(program).args(args).output();
}

fn ip() -> PathBuf {
    require("ip", "iproute2")
}

fn iptables() -> PathBuf {
    require("iptables", "iptables")
}

/// Where a fixture runs its processes: a host's namespace and address. Cheap to clone, so
/// fixtures keep one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The network namespace (`ip netns` name).
    pub netns: String,
    /// The host's address on its network.
    pub addr: Ipv4Addr,
}

impl Place {
    /// `program` to be started in this host's namespace (`ip netns exec <ns> program`):
    /// add arguments and environment as to any command. `ip netns exec` execs the program
    /// in place, so the child's pid is the program's.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(ip());
        command
            .args(["netns", "exec", &self.netns])
            .arg(program.as_ref());
        command
    }
}

/// What the hosts of a network share.
#[derive(Debug)]
struct Shared {
    number: u8,
    bridge: String,
    /// Each host's name and address, for their `/etc/hosts`.
    names: Mutex<Vec<(String, Ipv4Addr)>>,
}

impl Shared {
    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.number, 1)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let forward = forward_rule(&self.bridge);
        let mut delete = vec!["-w", "-D", "FORWARD"];
        delete.extend(forward.iter().map(String::as_str));
        run_quietly(&iptables(), &delete);
        run_quietly(&ip(), &["link", "del", &self.bridge]);
        let _ = std::fs::remove_file(Path::new(OWNERS).join(self.number.to_string()));
    }
}

/// The FORWARD rule that lets the bridge's frames pass between its ports.
fn forward_rule(bridge: &str) -> Vec<String> {
    ["-i", bridge, "-o", bridge, "-j", "ACCEPT"]
        .map(str::to_owned)
        .to_vec()
}

/// A bridge with an address in the test's namespace; hosts join it with
/// [`Network::add_host`]. Removed (with its FORWARD rule) when it and its hosts are gone.
#[derive(Debug, Clone)]
pub struct Network {
    shared: Arc<Shared>,
}

impl Network {
    /// A new network with a free number. Panics naming the Debian package if `ip` or
    /// `iptables` is missing, or with the command's complaint if this process may not
    /// create namespaces (run the tests as root).
    pub fn new() -> Self {
        let _choosing = CHOOSING.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::create_dir_all(OWNERS).unwrap_or_else(|err| {
            panic!("creating {OWNERS}: {err} (the host tests need root: ip netns, iptables)")
        });
        remove_abandoned();
        // Claimed by creating its owner file, which only one process can create.
        let number = (FIRST_NETWORK..=250)
            .filter(|n| !in_use(*n))
            .find(|n| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(Path::new(OWNERS).join(n.to_string()))
                    .and_then(|mut file| {
                        use std::io::Write;
                        write!(file, "{}", std::process::id())
                    })
                    .is_ok()
            })
            .expect("a free test network number (are 240 networks in use?)");
        let bridge = format!("ec{number}br");
        let shared = Shared {
            number,
            bridge: bridge.clone(),
            names: Mutex::new(Vec::new()),
        };
        let gateway = format!("{}/24", shared.gateway());
        run(&ip(), &["link", "add", &bridge, "type", "bridge"]);
        run(&ip(), &["addr", "add", &gateway, "dev", &bridge]);
        run(&ip(), &["link", "set", &bridge, "up"]);
        let mut insert = vec!["-w".to_owned(), "-I".into(), "FORWARD".into()];
        insert.extend(forward_rule(&bridge));
        let insert: Vec<&str> = insert.iter().map(String::as_str).collect();
        run(&iptables(), &insert);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// The address of the test's own namespace on this network (where nginx, the fault
    /// proxy and the test's clients are reached from the hosts).
    pub fn gateway(&self) -> Ipv4Addr {
        self.shared.gateway()
    }

    /// A new host named `name` (letters, digits and '-', at most 20 characters), with the
    /// next address. Its `/etc/hosts` names every host of the network added so far, and
    /// the hosts added before it learn its name too.
    pub fn add_host(&self, name: &str) -> Host {
        assert!(
            !name.is_empty()
                && name.len() <= 20
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "host name {name:?}: letters, digits and '-', at most 20"
        );
        let shared = &self.shared;
        let n = shared.number;
        let k = shared.names.lock().expect("host names").len() as u8 + 1;
        assert!(k <= 200, "at most 200 hosts on one test network");
        let addr = Ipv4Addr::new(10, 213, n, 10 + k);
        let netns = format!("ec{n}-{name}");
        let inside = format!("ec{n}h{k}");
        let outside = format!("ec{n}g{k}");
        // Its own /etc/hosts before anything runs there: `ip netns exec` binds it.
        let etc = Path::new("/etc/netns").join(&netns);
        std::fs::create_dir_all(&etc).expect("creating /etc/netns/<host>");
        let hosts_file = etc.join("hosts");
        std::fs::write(&hosts_file, "").expect("writing a host's /etc/hosts");
        let ip = ip();
        run(&ip, &["netns", "add", &netns]);
        // From here on, dropping it (also on a panic below) removes what was made.
        let host = Host {
            name: name.to_owned(),
            place: Place { netns, addr },
            hosts_file,
            outside: outside.clone(),
            extra_names: Mutex::new(Vec::new()),
            network: self.shared.clone(),
        };
        let netns = host.place.netns.as_str();
        run(
            &ip,
            &[
                "link", "add", &inside, "type", "veth", "peer", "name", &outside,
            ],
        );
        run(&ip, &["link", "set", &inside, "netns", netns]);
        run(&ip, &["-n", netns, "link", "set", &inside, "name", "eth0"]);
        let cidr = format!("{addr}/24");
        run(&ip, &["-n", netns, "addr", "add", &cidr, "dev", "eth0"]);
        run(&ip, &["-n", netns, "link", "set", "eth0", "up"]);
        run(&ip, &["-n", netns, "link", "set", "lo", "up"]);
        run(&ip, &["link", "set", &outside, "master", &shared.bridge]);
        run(&ip, &["link", "set", &outside, "up"]);
        for (chain, hook) in [("ecin", "INPUT"), ("ecout", "OUTPUT")] {
            host.iptables(&["-N", chain]);
            host.iptables(&["-A", hook, "-j", chain]);
        }
        shared
            .names
            .lock()
            .expect("host names")
            .push((name.to_owned(), addr));
        host.write_hosts();
        host
    }
}

impl Default for Network {
    fn default() -> Self {
        Self::new()
    }
}

/// One host: a namespace with an address on its network. Dropping it removes the
/// namespace (its processes should be stopped first; fixtures stop theirs on drop).
#[derive(Debug)]
pub struct Host {
    /// Its name on the network (in every host's `/etc/hosts`).
    pub name: String,
    place: Place,
    hosts_file: PathBuf,
    /// Its veth end on the bridge.
    outside: String,
    /// Names this host resolves besides the network's hosts (`cache-primary`, say).
    extra_names: Mutex<Vec<(String, Ipv4Addr)>>,
    network: Arc<Shared>,
}

impl Host {
    /// Its address.
    pub fn addr(&self) -> Ipv4Addr {
        self.place.addr
    }

    /// Where fixtures start processes on it.
    pub fn place(&self) -> Place {
        self.place.clone()
    }

    /// `program` to be run on this host (see [`Place::command`]).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        self.place.command(program)
    }

    fn iptables(&self, args: &[&str]) {
        let mut full = vec!["netns", "exec", &self.place.netns, "iptables", "-w"];
        full.extend(args);
        run(&ip(), &full);
    }

    /// From now on the host drops every packet in and out on its network interface: no
    /// answer, no reset, as a machine that lost power. Its own loopback still works.
    pub fn silence(&self) {
        self.iptables(&["-A", "ecin", "-i", "eth0", "-j", "DROP"]);
        self.iptables(&["-A", "ecout", "-o", "eth0", "-j", "DROP"]);
    }

    /// Drops every packet between this host and `peer` (both ways), silently.
    pub fn partition_from(&self, peer: Ipv4Addr) {
        let peer = peer.to_string();
        self.iptables(&["-A", "ecin", "-s", &peer, "-j", "DROP"]);
        self.iptables(&["-A", "ecout", "-d", &peer, "-j", "DROP"]);
    }

    /// Ends silence and partitions: packets flow again (the peers' retransmissions arrive).
    pub fn heal(&self) {
        self.iptables(&["-F", "ecin"]);
        self.iptables(&["-F", "ecout"]);
    }

    /// Makes `name` resolve to `addr` on this host (for programs started here), or moves
    /// it if it resolved elsewhere: what a DNS record's change looks like once its TTL
    /// has passed.
    pub fn set_name(&self, name: &str, addr: Ipv4Addr) {
        {
            let mut extra = self.extra_names.lock().expect("a host's names");
            extra.retain(|(known, _)| known != name);
            extra.push((name.to_owned(), addr));
        }
        self.write_hosts();
    }

    /// Rewrites this host's `/etc/hosts` in place. `ip netns exec` bind-mounted the file
    /// into the namespaces of the programs started here, which pins its inode: a new file
    /// renamed over it would not be seen, so it is overwritten, then cut to length, never
    /// left empty in between.
    fn write_hosts(&self) {
        let mut text = String::from("127.0.0.1 localhost\n");
        for (name, addr) in self.network.names.lock().expect("host names").iter() {
            text.push_str(&format!("{addr} {name}\n"));
        }
        for (name, addr) in self.extra_names.lock().expect("a host's names").iter() {
            text.push_str(&format!("{addr} {name}\n"));
        }
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.hosts_file)
            .expect("opening a host's /etc/hosts");
        file.write_all(text.as_bytes())
            .and_then(|()| file.set_len(text.len() as u64))
            .expect("writing a host's /etc/hosts");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        delete_netns(&self.place.netns);
        // The kernel may keep the namespace a while longer (sockets of a silent host still
        // retransmitting), and its veth pair with it; deleting this end deletes both now.
        run_quietly(&ip(), &["link", "del", &self.outside]);
    }
}

/// Deletes namespace `name` and its `/etc/netns` folder. `ip netns exec` gave each program
/// started there a mount namespace of its own, holding a copy of the namespace's mount;
/// until the kernel has torn that down (just after the program is reaped) the name cannot
/// be removed ("busy"), so this tries again for a while.
fn delete_netns(name: &str) {
    let path = Path::new("/run/netns").join(name);
    for _ in 0..100 {
        run_quietly(&ip(), &["netns", "del", name]);
        if !path.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(name));
}

/// Whether anything of network `number` exists: a link (its bridge, a veth end) or a
/// namespace.
fn in_use(number: u8) -> bool {
    let link = format!("ec{number}");
    let netns = format!("ec{number}-");
    let starts = |dir: &str, prefix: &str| {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.starts_with(prefix)
                    && name[prefix.len()..]
                        .chars()
                        .next()
                        .is_some_and(|c| !c.is_ascii_digit())
            })
        })
    };
    starts("/sys/class/net", &link) || starts("/run/netns", &netns) || starts("/etc/netns", &netns)
}

/// Removes what networks of test processes that no longer run left behind.
fn remove_abandoned() {
    for number in FIRST_NETWORK..=250 {
        let owner = std::fs::read_to_string(Path::new(OWNERS).join(number.to_string()));
        let abandoned = match owner {
            // Its owner's process is gone.
            Ok(owner) => !owner
                .trim()
                .parse::<u32>()
                .is_ok_and(|pid| Path::new("/proc").join(pid.to_string()).exists()),
            // Nobody owns it, yet something of it is left (a namespace the kernel kept
            // busy past its owner's cleanup, a folder left in /etc/netns by a reboot).
            Err(_) => in_use(number),
        };
        if abandoned {
            remove_network(number);
        }
    }
}

/// Removes every namespace, link, rule and file of network `number`.
fn remove_network(number: u8) {
    let prefix = format!("ec{number}-");
    for dir in ["/run/netns", "/etc/netns"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) {
                    delete_netns(&name);
                }
            }
        }
    }
    if let Ok(links) = std::fs::read_dir("/sys/class/net") {
        let prefix = format!("ec{number}g");
        for link in links.flatten() {
            let name = link.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                run_quietly(&ip(), &["link", "del", &name]);
            }
        }
    }
    // Dropping the shared part removes the bridge, its rule and the owner file.
    drop(Shared {
        number,
        bridge: format!("ec{number}br"),
        names: Mutex::new(Vec::new()),
    });
}
