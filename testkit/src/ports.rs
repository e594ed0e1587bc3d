//! Loopback ports for fixtures. Tests run in parallel and a fixture binds its port some
//! time after choosing it (a child process starts, a fleet starts its replicas one by one,
//! a killed replica or Redis is restarted on its old port); without a claim list the kernel
//! could hand the same free port to another test meanwhile, whose server would then answer
//! in this test's place.

use std::sync::Mutex;

/// Loopback ports handed out to this process's fixtures so far.
static CLAIMED: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A loopback listener on an ephemeral port that no other fixture of this process has been
/// given.
pub fn bind_unclaimed_port() -> std::net::TcpListener {
    loop {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        if !claimed.contains(&port) {
            claimed.push(port);
            return listener;
        }
    }
}

/// A free loopback port, claimed for the caller (see [`bind_unclaimed_port`]).
pub fn free_port() -> u16 {
    bind_unclaimed_port()
        .local_addr()
        .expect("a bound address")
        .port()
}

/// Redis Cluster's bus listens this far above a node's port.
const CLUSTER_BUS_OFFSET: u16 = 10_000;

/// How many ports [`free_cluster_port`] tries before it gives up.
const CLUSTER_PORT_ATTEMPTS: usize = 1_000;

/// A free loopback port for a Redis Cluster node, claimed for the caller together with its
/// bus port (`port + 10000`): at most 55535, which is all a cluster node accepts (Linux hands
/// out ephemeral ports up to 60999), and with the bus port free too, else the node exits.
/// The ports it rejects stay claimed, so that the next call gets others.
pub fn free_cluster_port() -> u16 {
    for _ in 0..CLUSTER_PORT_ATTEMPTS {
        let listener = bind_unclaimed_port();
        let port = listener.local_addr().expect("a bound address").port();
        let Some(bus) = port.checked_add(CLUSTER_BUS_OFFSET) else {
            continue;
        };
        let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        if claimed.contains(&bus) || std::net::TcpListener::bind(("127.0.0.1", bus)).is_err() {
            continue;
        }
        claimed.push(bus);
        return port;
    }
    panic!(
        "no loopback port at most {} with a free bus port in {CLUSTER_PORT_ATTEMPTS} tries: \
         does net.ipv4.ip_local_port_range reach below it?",
        u16::MAX - CLUSTER_BUS_OFFSET
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_port_leaves_room_for_its_bus_and_both_are_claimed() {
        for _ in 0..200 {
            let port = free_cluster_port();
            assert!(port <= u16::MAX - CLUSTER_BUS_OFFSET, "{port}");
            let claimed = CLAIMED.lock().unwrap();
            assert!(claimed.contains(&port) && claimed.contains(&(port + CLUSTER_BUS_OFFSET)));
        }
    }
}
